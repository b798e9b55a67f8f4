/*-------------------------------------------------------------------------
 *
 * workdir.c
 *	  The work directory (hagen.work_dir): resolving the relative paths SQL
 *	  names, removing a project's files (the "remove" effect), and telling
 *	  SQL where it is.
 *
 * Paths come from SQL and are always relative to the work directory;
 * absolute paths and ".." segments are refused, so no effect can read,
 * write or remove anything outside it.
 *
 * IDENTIFICATION
 *	  src/workdir.c
 *
 *-------------------------------------------------------------------------
 */
#include "hagenkit.h"

#include <sys/stat.h>
#include <unistd.h>

#include "common/file_utils.h"
#include "utils/builtins.h"
#include "utils/json.h"

/*
 * hagen_work_path resolves a path relative to the work directory.  With
 * create_dirs, the parent directories are made.  Returns NULL and sets
 * *error when the path is refused or a directory cannot be made.
 */
char *
hagen_work_path(const char *relative, bool create_dirs, char **error)
{
	char	   *path;
	char	   *dir;

	*error = NULL;
	if (relative == NULL || relative[0] == '\0' || is_absolute_path(relative))
	{
		*error = psprintf("work file path \"%s\" must be relative", relative ? relative : "");
		return NULL;
	}
	if (path_contains_parent_reference(relative))
	{
		*error = psprintf("work file path \"%s\" must not contain \"..\"", relative);
		return NULL;
	}
	path = psprintf("%s/%s", hagen_effective_work_dir(), relative);
	if (create_dirs)
	{
		dir = pstrdup(path);
		get_parent_directory(dir);
		if (pg_mkdir_p(dir, S_IRWXU) != 0 && errno != EEXIST)
		{
			*error = psprintf("could not create directory \"%s\": %m", dir);
			return NULL;
		}
		pfree(dir);
	}
	return path;
}

/*
 * hagen_work_remove carries out a "remove" effect: deletes a file or a
 * directory tree of the work directory and returns the outcome as JSON:
 * {"status":"ok","removed":true|false} or {"status":"error","error":...}.
 * A directory is first renamed aside (".removing_<pid>_<n>"), so that work
 * starting meanwhile under the same name begins in a new, empty directory;
 * should the deletion be cut short, the sweep finds the remains by name.
 */
char *
hagen_work_remove(const char *relative)
{
	static int	counter = 0;
	char	   *error;
	char	   *path = hagen_work_path(relative, false, &error);
	char	   *aside;
	struct stat st;
	StringInfoData out;

	initStringInfo(&out);
	if (path == NULL)
	{
		appendStringInfoString(&out, "{\"status\":\"error\",\"error\":");
		escape_json(&out, error);
		appendStringInfoChar(&out, '}');
		return out.data;
	}
	if (lstat(path, &st) != 0)
	{
		if (errno == ENOENT)
			return pstrdup("{\"status\":\"ok\",\"removed\":false}");
		error = psprintf("could not stat \"%s\": %m", path);
	}
	else if (!S_ISDIR(st.st_mode))
		error = unlink(path) == 0 ? NULL : psprintf("could not remove \"%s\": %m", path);
	else
	{
		aside = psprintf("%s/.removing_%d_%d", hagen_effective_work_dir(), (int) getpid(), ++counter);
		if (rename(path, aside) != 0)
			error = psprintf("could not rename \"%s\" aside: %m", path);
		else if (!rmtree(aside, true))
			error = psprintf("could not remove \"%s\" (renamed from \"%s\"); see the server log",
							 aside, path);
	}
	if (error)
	{
		appendStringInfoString(&out, "{\"status\":\"error\",\"error\":");
		escape_json(&out, error);
		appendStringInfoChar(&out, '}');
		return out.data;
	}
	return pstrdup("{\"status\":\"ok\",\"removed\":true}");
}

/*
 * hagen_file_size: the size of a work file that exists as a regular,
 * non-empty file (a finished download: downloads are renamed into place
 * when complete), else -1.
 */
int64
hagen_work_file_size(const char *path)
{
	struct stat st;

	if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0)
		return (int64) st.st_size;
	return -1;
}

PG_FUNCTION_INFO_V1(hagen_work_dir_sql);

/* hagen._work_dir(): the work directory, as the workers see it. */
Datum
hagen_work_dir_sql(PG_FUNCTION_ARGS pg_attribute_unused())
{
	PG_RETURN_TEXT_P(cstring_to_text(hagen_effective_work_dir()));
}
