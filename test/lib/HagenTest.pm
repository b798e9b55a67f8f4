# Shared pieces of hagenkit's end-to-end TAP tests: the local servers (S3,
# Fal.ai and xAI simulators), a cluster configured against them, waiting for
# a project, and probing media with hagen-compile.
package HagenTest;

use strict;
use warnings;

use Exporter 'import';
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(run start_server stop_server stop_servers pipeline_node wait_project
  probe_media helper_path);

our $root = $ENV{HAGEN_ROOT} // '.';
# Made at INIT time, after PostgreSQL::Test::Utils has set up tmp_check
# (at compile time it would be a relative directory).
our $dir;
INIT { $dir = PostgreSQL::Test::Utils::tempdir(); }
my (%servers, %pipes);

END { kill 'TERM', keys %servers if %servers; }

# Runs a shell command; dies when it fails.
sub run
{
	my ($cmd) = @_;
	system($cmd) == 0 or die "failed: $cmd";
	return;
}

# Starts a node server that prints {"listening": URL}; returns (URL, pid).
# The pipe to it is kept open: closing it would wait for the server.
sub start_server
{
	my ($name, @args) = @_;
	my $pid = open(my $out, '-|', join(' ', 'exec node', @args, "2>>$dir/$name.err"))
	  or die "cannot start $name: $!";
	$servers{$pid} = $name;
	$pipes{$pid} = $out;
	my $line = <$out> // '';
	my ($url) = $line =~ /"listening":"([^"]+)"/
	  or die "$name did not start: " . slurp_file("$dir/$name.err");
	return wantarray ? ($url, $pid) : $url;
}

sub stop_server
{
	my ($pid) = @_;
	kill 'TERM', $pid;
	waitpid($pid, 0);
	delete $servers{$pid};
	delete $pipes{$pid};
	return;
}

sub stop_servers { stop_server($_) for keys %servers; return; }

# The installed hagen-compile.
sub helper_path
{
	my $bindir = `pg_config --bindir`;
	chomp $bindir;
	return "$bindir/hagen-compile";
}

# A started cluster with hagenkit preloaded and pointed at the servers
# given (fal, xai, s3 URLs; s3_key, s3_secret), with the extension created.
# Extra settings are appended as they are.
sub pipeline_node
{
	my ($name, %o) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	my $conf = "shared_preload_libraries = 'hagenkit'\nhagen.database = 'postgres'\n"
	  . "hagen.work_dir = '$dir/work'\nhagen.poll_interval = '50ms'\n";
	$conf .= "hagen.fal_key = 'sim-id:sim-secret'\nhagen.fal_queue_url = '$o{fal}/queue'\n"
	  . "hagen.fal_rest_url = '$o{fal}/rest'\n" if $o{fal};
	$conf .= "hagen.xai_key = '$o{xai_key}'\nhagen.xai_url = '$o{xai}/v1'\n" if $o{xai};
	$conf .= "hagen.s3_endpoint = '$o{s3}'\nhagen.s3_bucket = 'videos'\n"
	  . "hagen.s3_access_key_id = '$o{s3_key}'\nhagen.s3_secret_access_key = '$o{s3_secret}'\n"
	  . "hagen.public_url = '$o{s3}/videos'\n" if $o{s3};
	$conf .= $o{extra} // '';
	$node->append_conf('postgresql.conf', $conf);
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION hagenkit');
	return $node;
}

# Waits until the project has ended; returns "status|error message".
sub wait_project
{
	my ($node, $p, $timeout) = @_;
	local $PostgreSQL::Test::Utils::timeout_default = $timeout // 240;
	$node->poll_query_until('postgres',
		"SELECT status IN ('completed', 'failed', 'canceled') FROM hagen.video_project WHERE id = '$p'")
	  or diag('project did not finish: ' . $node->safe_psql('postgres',
		"SELECT status || ' ' || progress::text FROM hagen.video_project WHERE id = '$p'"));
	return $node->safe_psql('postgres',
		"SELECT status || '|' || coalesce(error_message, '') FROM hagen.video_project WHERE id = '$p'");
}

# hagen-compile probe --decode of a file, as a hash ({} when it fails).
sub probe_media
{
	my ($file) = @_;
	my $helper = helper_path();
	my $out = `$helper probe '$file' --decode`;
	return eval { decode_json($out) } // {};
}

1;
