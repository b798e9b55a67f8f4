# Compile workers on other hosts: `hagen-compile worker` processes compile
# projects of a server with hagen.compile_workers = 0 (hagen-compile never
# runs on the database host), through presigned URLs the S3 server checks.
# The hagen_worker role reaches nothing but its five functions; a wrong DSN
# and a role without hagen_worker get clear messages and back-off; a dropped
# session and a database restart in the middle of a job lose nothing and do
# nothing twice; a worker SIGKILLed in the middle of a compile leaves no
# helper behind and its job is redone by the other worker once its lease
# runs out, to the byte; URLs that expired while a job waited are signed
# again on the retry; SIGTERM finishes the job under way, a second SIGTERM
# hands it back.
#
# Jobs are held in the middle on purpose by stopping the S3 server
# (SIGSTOP) while a worker downloads its inputs: its request waits in the
# server's queue, and SIGCONT lets it go on.
use strict;
use warnings;

use Digest::SHA;
use FindBin;
use lib "$FindBin::Bin/../lib";
use HagenTest;
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep time);

need_servers();
need_ffmpeg();

my $dir = $HagenTest::dir;
my $requests = "$dir/s3-requests.log";
my $secret = 'remote-secret-' . int(rand(1e9));
my ($s3, $s3_pid) = s3_server(key => 'remote-key', secret => $secret, args => "--request-log $requests");

# A stand-in for hagen.compile_helper that notes any run: with
# hagen.compile_workers = 0 the database host must never start one.
my $host_runs = "$dir/host-helper-runs.txt";
open my $wh, '>', "$dir/host-helper" or die;
print $wh "#!/bin/sh\necho \"\$*\" >> $host_runs\nexit 1\n";
close $wh;
chmod 0755, "$dir/host-helper";

# Every compile in one run (a re-encode split into chunks on remote workers
# is 020_chunks.pl's).
my $node = pipeline_node('remote', s3 => $s3, s3_key => 'remote-key', s3_secret => $secret,
	settings => [ 'hagen.compile_workers' => 0, 'hagen.compile_helper' => "$dir/host-helper",
		'hagen.worker_lease' => '6s', 'hagen.fal_key' => 'unused:key', 'hagen.compile_chunk_length' => '0' ]);
sub sql { return $node->safe_psql('postgres', $_[0]); }
sql(q{CREATE ROLE rw1 LOGIN IN ROLE hagen_worker; CREATE ROLE rw2 LOGIN IN ROLE hagen_worker;
	CREATE ROLE rw3 LOGIN IN ROLE hagen_worker; CREATE ROLE nobody LOGIN});

# Media: small clips, larger ones for a compile that takes a while (a
# crossfade re-encodes), and music.
run("ffmpeg -loglevel error -y -f lavfi -i 'testsrc2=s=320x180:r=24:d=2' -f lavfi -i 'sine=f=440:d=2'"
	  . " -c:v libx264 -pix_fmt yuv420p -c:a aac -shortest $dir/small.mp4");
run("ffmpeg -loglevel error -y -f lavfi -i 'testsrc2=s=640x360:r=24:d=5' -f lavfi -i 'sine=f=330:d=5'"
	  . " -c:v libx264 -pix_fmt yuv420p -c:a aac -shortest $dir/big.mp4");
my $music = sql("SELECT hagen.add_music_track('Low hum', '" . put_music($s3, 'music/m.mp3', 8, 220) . "')");

# A project whose clips are generated and stored in the bucket: what is
# left is its compile.
my $nproj = 0;
sub prepared_project
{
	my ($clip, $n, %o) = @_;
	my $ws = 'ws-' . ++$nproj;
	my $p = sql(qq{SELECT hagen.create_project('$ws', music_track_id => '$music',
		crossfade => @{[ $o{crossfade} // 0 ]})});
	for my $i (1 .. $n)
	{
		my $c = sql(qq{SELECT hagen.add_clip('$p', 'https://example.com/$i.jpg', room_label => 'Room $i')});
		put_object($s3, sql("SELECT hagen.get_video_path('$ws', '$p', '$c.mp4')"), $clip, 'video/mp4');
	}
	sql(qq{UPDATE hagen.video_clip SET status = 'completed' WHERE project_id = '$p';
		UPDATE hagen.video_project SET status = 'generating', started_at = now() WHERE id = '$p';
		SELECT hagen._advance_project('$p');});
	return $p;
}

sub compile_job { return sql("SELECT id FROM hagen.job WHERE project_id = '$_[0]' AND kind = 'compile'"); }

# Waits until the project's compile job is in step compile (queued or
# running, as asked).
sub wait_compile_step
{
	my ($p, $status) = @_;
	return $node->poll_query_until('postgres', qq{SELECT count(*) = 1 FROM hagen.job
		WHERE project_id = '$p' AND kind = 'compile' AND step = 'compile' AND status = '$status'});
}

# ---------------------------------------------------------------- workers

my %workers;
# A test that dies leaves no worker behind, and no S3 server stopped (a
# stopped process would never act on the SIGTERM that ends it).
END { kill 'KILL', values %workers if %workers; kill 'CONT', $s3_pid if $s3_pid; }

sub dsn
{
	my ($user) = @_;
	return 'host=' . $node->host . ' port=' . $node->port . " dbname=postgres user=$user";
}

# Starts `hagen-compile worker` NAME (stderr to $dir/worker-NAME.log).
sub start_worker
{
	my ($name, %o) = @_;
	my $log = "$dir/worker-$name.log";
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open STDOUT, '>>', $log or POSIX::_exit(126);
		open STDERR, '>>', $log or POSIX::_exit(126);
		# exec in a block of its own: the exit after it is what runs when it fails.
		{ exec(helper_path(), 'worker', '--dsn', $o{dsn} // dsn($o{user} // 'rw1'), '--name', $name,
			'--work-dir', "$dir/wk", @{ $o{args} // [] }); }
		POSIX::_exit(127);
	}
	$workers{$name} = $pid;
	return $pid;
}

# Waits for a worker to exit; returns its exit status (undef if it did not).
sub wait_exit
{
	my ($name, $timeout) = @_;
	my $until = time + ($timeout // 30);
	while (time < $until)
	{
		my $r = waitpid($workers{$name}, POSIX::WNOHANG());
		if ($r == $workers{$name})
		{
			delete $workers{$name};
			return $? >> 8;
		}
		sleep 0.1;
	}
	return undef;
}

sub stop_worker
{
	my ($name) = @_;
	kill 'TERM', $workers{$name};
	my $rc = wait_exit($name, 30);
	if (!defined $rc)
	{
		kill 'KILL', $workers{$name};
		wait_exit($name, 5);
	}
	return $rc;
}

sub worker_log { my $f = "$dir/worker-$_[0].log"; return -e $f ? slurp_file($f) : ''; }

# Waits until a worker's log matches.
sub wait_log
{
	my ($name, $re, $timeout) = @_;
	my $until = time + ($timeout // 60);
	while (time < $until)
	{
		return 1 if worker_log($name) =~ $re;
		sleep 0.1;
	}
	diag("worker $name log:\n" . worker_log($name));
	return 0;
}

# The pids of hagen-compile helpers working on a compile job.
sub helpers_of
{
	my ($job) = @_;
	my @pids;
	for my $f (glob '/proc/[0-9]*/cmdline')
	{
		open my $fh, '<', $f or next;
		my $cmd = do { local $/; <$fh> } // '';
		push @pids, $f =~ m{/proc/(\d+)/} if $cmd =~ m{^hagen-compile\0compile\0[^\0]*/compile_${job}_\d+/manifest\.json};
	}
	return @pids;
}

sub sha { return Digest::SHA->new(256)->addfile($_[0])->hexdigest; }

sub fetch_final
{
	my ($p, $file) = @_;
	run("curl -sf '" . sql("SELECT final_video_url FROM hagen.video_project WHERE id = '$p'") . "' -o $file");
	return $file;
}

# ---------------------------------------------------------------- 1. the role

{
	my ($rc, $out, $err);
	my $as_worker = sub {
		my ($q) = @_;
		($rc, $out, $err) = (0, '', '');
		$rc = $node->psql('postgres', $q, stdout => \$out, stderr => \$err, extra_params => [ '-U', 'rw1' ]);
		return $err;
	};
	like($as_worker->('SELECT * FROM hagen.video_project'), qr/permission denied for table video_project/,
		'hagen_worker cannot read hagen.video_project');
	like($as_worker->('SELECT * FROM hagen.job'), qr/permission denied for table job/, '... nor hagen.job');
	like($as_worker->('SHOW hagen.s3_secret_access_key'), qr/must be superuser/, '... nor SHOW a secret setting');
	like($as_worker->("SELECT current_setting('hagen.fal_key')"), qr/must be superuser/, '... nor read one with current_setting');
	like($as_worker->(q{SELECT * FROM hagen.claim_jobs('http', 1)}), qr/permission denied for function claim_jobs/,
		'... nor claim with the engine\'s own claim_jobs');
	like($as_worker->(q{SELECT hagen.presign_url('ws/videos/x/final.mp4')}), qr/permission denied for function presign_url/,
		'... nor presign a URL of its own');
	like($as_worker->('SELECT * FROM hagen.compile_workers'), qr/permission denied for view compile_workers/,
		'... nor read the operators\' view');
	# A job of the http lane under way, with its real token.
	my ($job, $tok) = split /\|/, sql(q{INSERT INTO hagen.job (kind, lane, step, state, status, lease_token,
		lease_expires_at) VALUES ('cleanup', 'http', 'remove', '{"dir": "nothing-here"}', 'running',
		nextval('hagen.lease_token_seq'), now() + interval '1 hour') RETURNING id, lease_token});
	like($as_worker->(qq{SELECT hagen.worker_complete($job, $tok, '{"status": "ok", "uploaded": true, "result": {}}')}),
		qr/job $job is not a job of the compile lane/, 'completing a job of the http lane is refused');
	like($as_worker->("SELECT hagen.worker_heartbeat($job, $tok, 0.5)"), qr/not a job of the compile lane/,
		'so are its heartbeat');
	like($as_worker->("SELECT hagen.worker_release($job, $tok)"), qr/not a job of the compile lane/, 'and its release');
	is(sql("SELECT status || ' ' || lease_token FROM hagen.job WHERE id = $job"), "running $tok", 'the job is untouched');
	sql("DELETE FROM hagen.job WHERE id = $job");
	# (Photo framing on remote workers: test/t/019_remote_framing.pl.)
	like($as_worker->(q{SELECT * FROM hagen.worker_claim('bad name', 1)}), qr/invalid worker name "bad name"/,
		'a worker name with a space is refused');
	$node->psql('postgres', q{SELECT hagen.worker_next_due()}, stderr => \$err, extra_params => [ '-U', 'nobody' ]);
	like($err, qr/permission denied for (schema hagen|function worker_next_due)/,
		'a role without hagen_worker cannot call the protocol');
}

# ---------------------------------------------------------------- 2. a project, two workers

my $p1 = prepared_project("$dir/small.mp4", 3);
my $p2 = prepared_project("$dir/small.mp4", 2);
ok(wait_compile_step($p1, 'queued') && wait_compile_step($p2, 'queued'), 'with no worker anywhere, the compiles wait');
is(sql("SELECT progress ->> 'label' FROM hagen.video_project WHERE id = '$p1'"), 'Waiting for a compile worker',
	'and video_status says so');
like(sql("SELECT hagen.video_status('$p1') ->> 'progress'"), qr/Waiting for a compile worker/, '(in video_status)');
my $t0 = time;
start_worker('w1');
start_worker('w2', user => 'rw2');
is(wait_project($node, $p1, 60), 'completed|', 'a project compiles on remote workers with hagen.compile_workers = 0');
is(wait_project($node, $p2, 60), 'completed|', 'and a second one beside it');
note(sprintf('both compiled %.1f s after the workers started', time - $t0));
my $pr = probe_media(fetch_final($p1, "$dir/p1.mp4"));
ok(abs(($pr->{decoded}{video_end} // 0) - 6) < 0.05 && abs(($pr->{decoded}{audio_end} // 0) - 6) < 0.05,
	"the video lasts 6 s, audio and video together (video $pr->{decoded}{video_end}, audio $pr->{decoded}{audio_end})");
like(`curl -sI '$s3/videos/@{[ sql("SELECT hagen.get_video_path('ws-1', '$p1', 'thumbnail.jpg')") ]}'`,
	qr/content-type: image\/jpeg/i, 'the thumbnail is stored as image/jpeg');
is(sql("SELECT sum(jobs_done) FROM hagen.compile_workers WHERE name IN ('w1', 'w2')"), '2',
	'hagen.compile_workers counts the two compiles');
is(sql("SELECT count(*) FROM hagen.job WHERE kind = 'compile' AND project_id IN ('$p1', '$p2') AND attempts = 1"),
	'2', 'each compiled at its first attempt');
ok(!-e $host_runs, 'hagen-compile never ran on the database host');
my $log = slurp_file($requests);
my @puts = $log =~ m{^(PUT /videos/ws-[12]/videos/\S*/(?:final\.mp4|thumbnail\.jpg)\S* \d+)}mg;
is(scalar(@puts), 4, 'the four outputs were sent once each');
is(scalar(grep { m{\?X-Amz-Algorithm=AWS4-HMAC-SHA256&\S*X-Amz-Signature=\w+ 200$} } @puts), 4,
	'with presigned PUTs the S3 server checked and answered 200');
ok(scalar(() = $log =~ m{^GET /videos/ws-1/videos/\S*\.mp4\?X-Amz-Algorithm=\S*X-Amz-Signature=\S* 200}mg) >= 3,
	'the inputs came down with presigned GETs');
my $wlogs = worker_log('w1') . worker_log('w2');
unlike($wlogs, qr/X-Amz-Signature|\Q$secret\E/, 'the workers log neither a URL nor the secret');
like($wlogs, qr/job \d+: completed: applied/, 'and a line per job');

# ---------------------------------------------------------------- 3. a dropped session, a restart

stop_worker('w2');
stop_worker('w1');
my $p = prepared_project("$dir/small.mp4", 2);
ok(wait_compile_step($p, 'queued'), 'a compile waits');
kill 'STOP', $s3_pid;
start_worker('w3');
ok(wait_compile_step($p, 'running'), 'worker w3 claims it (the S3 server is stopped: its downloads wait)');
my $backend = sql("SELECT lease_owner FROM hagen.job WHERE project_id = '$p' AND kind = 'compile'");
sql("SELECT pg_terminate_backend($backend)");
ok(wait_log('w3', qr/lost the database connection[^\n]*\n(?:.*\n)*?.*connected to database/, 30),
	'its session terminated, the worker connects again');
kill 'CONT', $s3_pid;
is(wait_project($node, $p, 60), 'completed|', 'and completes its job');
is(sql("SELECT attempts FROM hagen.job WHERE id = " . compile_job($p)), '1', 'claimed once, done once');
is(sql("SELECT count(*) FROM hagen.job_log WHERE job_id = " . compile_job($p) . " AND message ~ '^claimed by'"),
	'1', 'the job log shows one claim');

stop_worker('w3');
$p = prepared_project("$dir/small.mp4", 2);
ok(wait_compile_step($p, 'queued'), 'another compile waits');
kill 'STOP', $s3_pid;
start_worker('w3r');
ok(wait_compile_step($p, 'running'), 'w3r claims it');
$node->restart;
ok(wait_log('w3r', qr/lost the database connection[^\n]*\n(?:.*\n)*?.*connected to database/, 30),
	'the database restarted under the worker: it connects again');
kill 'CONT', $s3_pid;
is(wait_project($node, $p, 60), 'completed|', 'and completes its job');
is(sql("SELECT attempts FROM hagen.job WHERE id = " . compile_job($p)), '1', 'claimed once, done once');
is(sql("SELECT count(*) FROM hagen.job WHERE lane = 'compile' AND status = 'running'"), '0', 'no job is left leased');

# ---------------------------------------------------------------- 4. SIGKILL mid-compile

# The reference: a re-encoded project (a crossfade), undisturbed.
my $ref = prepared_project("$dir/big.mp4", 4, crossfade => 0.5);
is(wait_project($node, $ref, 120), 'completed|', 'a project with a crossfade compiles undisturbed');
start_worker('w4', user => 'rw2');
$p = prepared_project("$dir/big.mp4", 4, crossfade => 0.5);
ok(wait_compile_step($p, 'running'), 'the same project again is claimed');
my $job = compile_job($p);
my @helpers;
my $until = time + 60;
while (!@helpers && time < $until)
{
	@helpers = helpers_of($job);
	sleep 0.02;
}
ok(@helpers, "its helper runs (pid @helpers)");
my $holder = sql("SELECT worker FROM hagen.remote_lease WHERE job_id = $job");
my $killed_at = time;
kill 'KILL', $workers{$holder};
wait_exit($holder, 10);
note("worker $holder SIGKILLed in the middle of the compile");
$until = time + 10;
sleep 0.05 while helpers_of($job) && time < $until;
is(scalar(helpers_of($job)), 0, 'its helper died with it (no hagen-compile left)');
is(wait_project($node, $p, 120), 'completed|', 'the other worker completes the job');
my $other = $holder eq 'w3r' ? 'w4' : 'w3r';
like(sql("SELECT string_agg(message, ' / ' ORDER BY id) FROM hagen.job_log WHERE job_id = $job"),
	qr/claimed by remote worker $holder.*lease expired; job taken up again.*claimed by remote worker $other/,
	"after ${holder}'s lease ran out, $other took it up");
ok(sql("SELECT extract(epoch FROM max(logged_at) FILTER (WHERE message = 'claimed by remote worker $other')
	- max(logged_at) FILTER (WHERE message = 'claimed by remote worker $holder')) FROM hagen.job_log WHERE job_id = $job") < 20,
	'within about hagen.worker_lease (6 s) of the last heartbeat');
my $pk = probe_media(fetch_final($p, "$dir/killed.mp4"));
my $pref = probe_media(fetch_final($ref, "$dir/ref.mp4"));
ok(abs(($pk->{decoded}{video_end} // 0) - 18.5) < 0.05 && abs(($pk->{decoded}{audio_end} // 0) - 18.5) < 0.05,
	"the video lasts 18.5 s, audio with video ($pk->{decoded}{video_end}, $pk->{decoded}{audio_end})");
is(sha("$dir/killed.mp4"), sha("$dir/ref.mp4"), 'and is byte for byte the undisturbed one');

# ---------------------------------------------------------------- 5. expired URLs

stop_worker($other);
reconfigure($node, 'hagen.compile_timeout' => '20s', 'hagen.worker_url_margin' => '0');
$node->poll_query_until('postgres', q{SELECT current_setting('hagen.compile_timeout') = '20s'});
$p = prepared_project("$dir/small.mp4", 2);
ok(wait_compile_step($p, 'queued'), 'a compile waits');
kill 'STOP', $s3_pid;
start_worker('w5');
ok(wait_compile_step($p, 'running'), 'it is claimed with URLs that live 20 s; its downloads wait');
sleep 22;
kill 'CONT', $s3_pid;
is(wait_project($node, $p, 60), 'completed|', 'the S3 server refused the expired URLs, the retry got new ones');
$job = compile_job($p);
like(sql("SELECT string_agg(message, ' / ' ORDER BY id) FROM hagen.job_log WHERE job_id = $job"),
	qr/compile failed: download of \S+ failed: HTTP 403: AccessDenied: Request has expired.*claimed by remote worker w5.*compile job succeeded/,
	'the job log says why (HTTP 403: AccessDenied: Request has expired)');
is(sql("SELECT attempts FROM hagen.job WHERE id = $job"), '2', 'two attempts');
reconfigure($node, 'hagen.compile_timeout' => '30min', 'hagen.worker_url_margin' => '15min');
$node->poll_query_until('postgres', q{SELECT current_setting('hagen.compile_timeout') = '30min'});

# ---------------------------------------------------------------- 6. SIGTERM

stop_worker('w5');
$p = prepared_project("$dir/small.mp4", 2);
ok(wait_compile_step($p, 'queued'), 'a compile waits');
kill 'STOP', $s3_pid;
start_worker('w6');
ok(wait_compile_step($p, 'running'), 'w6 claims it');
kill 'TERM', $workers{w6};
ok(wait_log('w6', qr/SIGTERM: no more claims; 1 job/, 10), 'SIGTERM: it stops claiming');
kill 'CONT', $s3_pid;
is(wait_exit('w6', 60), 0, 'and exits once its job is done');
is(wait_project($node, $p, 10), 'completed|', 'the job was completed');
is(sql("SELECT count(*) FROM hagen.job WHERE lane = 'compile' AND status = 'running'"), '0', 'no job is left leased');

$p = prepared_project("$dir/small.mp4", 2);
ok(wait_compile_step($p, 'queued'), 'another compile waits');
kill 'STOP', $s3_pid;
start_worker('w7');
ok(wait_compile_step($p, 'running'), 'w7 claims it');
kill 'TERM', $workers{w7};
ok(wait_log('w7', qr/SIGTERM/, 10), 'SIGTERM');
kill 'TERM', $workers{w7};
is(wait_exit('w7', 30), 0, 'a second SIGTERM: it exits at once');
$job = compile_job($p);
is(sql("SELECT status || ' ' || attempts FROM hagen.job WHERE id = $job"), 'queued 0',
	'its job was handed back: queued again, the attempt not counted');
like(sql("SELECT string_agg(message, ' / ') FROM hagen.job_log WHERE job_id = $job"),
	qr/handed back by remote worker w7 \(stopping\); queued again/, 'the job log says so');
kill 'CONT', $s3_pid;
start_worker('w8');
is(wait_project($node, $p, 60), 'completed|', 'another worker completes it');
is(sql("SELECT count(*) FROM hagen.job_log WHERE job_id = $job AND message ~ 'lease expired'"), '0',
	'without waiting for a lease to run out');
is(sql("SELECT jobs_handed_back FROM hagen.compile_workers WHERE name = 'w7'"), '1', 'hagen.compile_workers counts the hand-back');
stop_worker('w8');

# A lease lost while the worker was stopped (a partition longer than the
# lease): another worker takes the job up; the first one, back, learns it
# from its heartbeat, stops its copy, and its outcome counts for nothing.
$p = prepared_project("$dir/small.mp4", 2);
ok(wait_compile_step($p, 'queued'), 'a compile waits');
kill 'STOP', $s3_pid;
start_worker('wa');
ok(wait_compile_step($p, 'running'), 'wa claims it');
kill 'STOP', $workers{wa};
sleep 8;
start_worker('wb', user => 'rw2');
$job = compile_job($p);
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM hagen.job_log WHERE job_id = $job
	AND message = 'claimed by remote worker wb'"), 'wa silent past its lease: wb takes the job up');
kill 'CONT', $workers{wa};
ok(wait_log('wa', qr/job $job: stopped: canceled, or taken over by another worker(.*\n)*.*job $job: reported its failure: stale/, 30),
	'wa, back, is told by its heartbeat, stops its copy, and its outcome is stale');
kill 'CONT', $s3_pid;
is(wait_project($node, $p, 60), 'completed|', 'wb completes the job');
is(sql("SELECT jobs_done || ' ' || jobs_failed FROM hagen.compile_workers WHERE name = 'wa'"), '0 0',
	'nothing is counted for wa');
stop_worker('wa');
stop_worker('wb');

# A project canceled in the middle of its compile: the next heartbeat stops it.
$p = prepared_project("$dir/small.mp4", 2);
ok(wait_compile_step($p, 'queued'), 'a compile waits');
kill 'STOP', $s3_pid;
start_worker('wc');
ok(wait_compile_step($p, 'running'), 'wc claims it');
sql("SELECT hagen.cancel_video('$p')");
ok(wait_log('wc', qr/stopped: canceled, or taken over/, 20), 'canceled: its next heartbeat stops the job');
kill 'CONT', $s3_pid;
is(wait_project($node, $p, 30), 'canceled|', 'the project ends canceled');
is(sql("SELECT status FROM hagen.job WHERE id = " . compile_job($p)), 'canceled', 'and so does its compile');
is(scalar(helpers_of(compile_job($p))), 0, 'no helper is left');
stop_worker('wc');

# Transfers answered 503: the worker tries them again itself, the compile
# is not retried.
$p = prepared_project("$dir/small.mp4", 2);
ok(wait_compile_step($p, 'queued'), 'a compile waits');
my $first_clip = sql("SELECT id FROM hagen.video_clip WHERE project_id = '$p' ORDER BY sequence_order LIMIT 1");
run("curl -sf -X PUT '$s3/_faults?match=$first_clip.mp4&method=GET&count=2&status=503'");
run("curl -sf -X PUT '$s3/_faults?match=$p/final.mp4&method=PUT&count=1&status=500'");
start_worker('wd');
is(wait_project($node, $p, 60), 'completed|', 'a download answered 503 twice and an upload answered 500 once');
is(sql("SELECT attempts FROM hagen.job WHERE id = " . compile_job($p)), '1', 'one attempt of the compile');
like(worker_log('wd'), qr/download of \S+$first_clip\.mp4 failed: HTTP 503; trying the failed downloads again(.*\n)*.*upload of \S+final\.mp4 failed: HTTP 500; trying again/,
	'the worker tried the transfers again itself');
stop_worker('wd');
run("curl -sf -X DELETE '$s3/_faults'");

# --jobs 2: two compiles at once in one worker.
my @two = (prepared_project("$dir/small.mp4", 2), prepared_project("$dir/small.mp4", 3));
ok(wait_compile_step($two[0], 'queued') && wait_compile_step($two[1], 'queued'), 'two compiles wait');
kill 'STOP', $s3_pid;
start_worker('w9', args => [ '--jobs', 2 ]);
ok(wait_compile_step($two[0], 'running') && wait_compile_step($two[1], 'running'), 'a worker with --jobs 2 claims both');
is(sql("SELECT cardinality(current_jobs) || ' ' || (current_projects @> ARRAY['$two[0]', '$two[1]']::uuid[])
	FROM hagen.compile_workers WHERE name = 'w9'"), '2 true', 'hagen.compile_workers shows it holding both');
kill 'CONT', $s3_pid;
is(wait_project($node, $two[0], 60) . ' ' . wait_project($node, $two[1], 60), 'completed| completed|',
	'and completes both');
stop_worker('w9');

# ---------------------------------------------------------------- 7. a wrong DSN, a revoked role

start_worker('bad-dsn', dsn => 'dbname=postgres port');
is(wait_exit('bad-dsn', 10), 2, 'a DSN that does not parse: exit status 2');
like(worker_log('bad-dsn'), qr/invalid --dsn: missing "=" after "port"/, 'saying why');

start_worker('closed', dsn => 'host=127.0.0.1 port=' . closed_port() . ' dbname=postgres user=rw1 password=pw-' . $secret);
ok(wait_log('closed', qr/(could not connect to the database: .*next try in [\d.]+ s\n.*){3}/, 30),
	'a database that does not answer: tried again and again');
my @waits = worker_log('closed') =~ /next try in ([\d.]+) s/g;
ok($waits[2] > $waits[0], "with growing waits (@waits[0..2] s)");
unlike(worker_log('closed'), qr/pw-\Q$secret\E/, 'the password of the DSN is never logged');
stop_worker('closed');

start_worker('revoked', user => 'rw3');
ok(wait_log('revoked', qr/connected to database "postgres"/, 20), 'a worker of role rw3 connects');
sql('REVOKE hagen_worker FROM rw3');
$p = prepared_project("$dir/small.mp4", 2);
ok(wait_log('revoked', qr/hagen.worker_claim failed: permission denied for (schema hagen|function worker_claim) \(SQLSTATE 42501\) \(the role needs hagen_worker: GRANT hagen_worker TO <role>/, 30),
	'once its role loses hagen_worker, its claims fail with a message naming the grant');
$until = time + 30;
my @gaps;
while (@gaps < 3 && time < $until)
{
	@gaps = worker_log('revoked') =~ /next claim in ([\d.]+) s/g;
	sleep 0.2;
}
ok(@gaps >= 3 && $gaps[2] > $gaps[0], "and it backs off (@gaps[0..2] s)");
is(sql("SELECT status FROM hagen.job WHERE id = " . compile_job($p)), 'queued', 'the job waits');
sql('GRANT hagen_worker TO rw3');
is(wait_project($node, $p, 60), 'completed|', 'granted again, the worker carries on by itself');
stop_worker('revoked');

ok(!-e $host_runs, 'and hagen-compile never ran on the database host');
ok(scalar(() = glob("$dir/wk/hagen-compile-worker/$holder/job_*")) == 1,
	"the SIGKILLed worker $holder left its job's directory");
start_worker($holder);
ok(wait_log($holder, qr/started:.*(\n.*)*started:/, 20), "a worker started again under its name");
stop_worker($holder);
is(scalar(() = glob("$dir/wk/hagen-compile-worker/*/job_*")), 0, 'removes it: no job directory is left on any worker');

done_testing();
