# Crashes and restarts over whole projects: 10 clips, 3 seamless
# transitions and music, with the dispatcher SIGKILLed over and over (each
# kill is a crash of the server: every process restarts), the server shut
# down with -m immediate, and the compile helper killed mid-compile.  Every
# run completes, every clip and transition is paid exactly once, and the
# final video is byte for byte the one of an undisturbed run.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../lib";
use HagenTest;
use Digest::SHA;
use Time::HiRes qw(time sleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

need_servers();
need_ffmpeg();

my $dir = $HagenTest::dir;

my $s3 = s3_server(key => 'crash-key', secret => 'crash-secret');
# Deterministic: no clocks, every poll moves a job one state on, and the
# same inputs always give the same bytes.
my $fal = fal_sim(args => '--mode deterministic');

put_photos($s3, 10);
put_music($s3, 'music/m.mp3', 20, 262);

my $node = pipeline_node('crash', fal => $fal, s3 => $s3, s3_key => 'crash-key', s3_secret => 'crash-secret',
	settings => [ 'hagen.compile_workers' => 1, 'hagen.poll_interval' => '30ms', 'hagen.max_attempts' => 30,
		'restart_after_crash' => 'on' ]);
my $music = $node->safe_psql('postgres', "SELECT hagen.add_music_track('M', '$s3/videos/music/m.mp3')");

sub ledger_count { my @ids = `curl -sf $fal/_sim/ledger` =~ /"request_id":"([^"]+)"/g; return scalar @ids; }

# The same property every time: 10 clips, seamless transitions after 1, 4 and 7.
sub make_project
{
	my ($ws) = @_;
	my $p = $node->safe_psql('postgres', "SELECT hagen.create_project('$ws', music_track_id => '$music')");
	$node->safe_psql('postgres', qq{SELECT hagen.add_clip('$p', '$s3/videos/photos/' || i || '.jpg',
		room_type => (ARRAY['exterior', 'living_room', 'kitchen', 'bedroom', 'bathroom'])[i % 5 + 1],
		transition_type => CASE WHEN i IN (1, 4, 7) THEN 'seamless' ELSE 'cut' END)
		FROM generate_series(0, 9) i});
	return $p;
}

sub status
{
	my ($p) = @_;
	return $node->safe_psql('postgres', "SELECT status FROM hagen.video_project WHERE id = '$p'");
}

sub final_sha
{
	my ($p) = @_;
	my $url = $node->safe_psql('postgres', "SELECT final_video_url FROM hagen.video_project WHERE id = '$p'");
	system("curl -sf '$url' -o $dir/final.mp4") == 0 or return 'no final video';
	return Digest::SHA->new(256)->addfile("$dir/final.mp4")->hexdigest;
}

# Waits for the crash-restart a kill causes: both workers started after
# the kill (the ones from before may still be listed for a moment, and the
# server refuses connections while it recovers).
sub wait_workers
{
	my ($killed_at) = @_;
	local $PostgreSQL::Test::Utils::timeout_default = 60;
	return $node->poll_query_until('postgres', qq{SELECT count(*) = 2 FROM pg_stat_activity
		WHERE backend_type IN ('hagenkit dispatcher', 'hagenkit compile worker')
		  AND backend_start > '$killed_at'});
}

sub server_now { return $node->safe_psql('postgres', 'SELECT now()'); }

sub wait_done
{
	my ($p) = @_;
	local $PostgreSQL::Test::Utils::timeout_default = 300;
	$node->poll_query_until('postgres',
		"SELECT status IN ('completed', 'failed', 'canceled') FROM hagen.video_project WHERE id = '$p'");
	return $node->safe_psql('postgres',
		"SELECT status || '|' || coalesce(error_message, '') FROM hagen.video_project WHERE id = '$p'");
}

# 1. Undisturbed.
my $before = ledger_count();
my $p = make_project('ws-calm');
$node->safe_psql('postgres', "SELECT hagen.start_video('$p')");
is(wait_done($p), 'completed|', 'an undisturbed 10-clip project completes');
is(ledger_count() - $before, 13, 'ten clips and three transitions were paid, once each');
my $reference = final_sha($p);
like($reference, qr/^[0-9a-f]{64}$/, "reference final video $reference");

# 2. The dispatcher killed again and again.  A kill while submits are on
# the wire cannot be resolved without paying twice (Fal.ai has no
# idempotency key): such clips are failed as unconfirmed, which
# 005_fal_pipeline covers.  Kills here are aimed at every moment after
# the submits (polls, results, downloads, uploads, the compile).
my (%steps, $kills, $runs);
$kills = 0;
# Each job now takes 40 polls at the provider: time to kill in every step.
run(qq{curl -sf -X POST -H 'content-type: application/json' -d '{"polls_before_completed":40}' $fal/_sim/config >/dev/null});
while ($kills < 24 && $runs++ < 8)
{
	$before = ledger_count();
	$p = make_project("ws-killed-$runs");
	$node->safe_psql('postgres', "SELECT hagen.start_video('$p')");
	# The first kill of the first runs waits for a step that is over
	# quickly: fetching a result, downloading or storing a clip.
	my $target = $runs <= 3 ? 'result|download|store' : undef;
	while (status($p) =~ /^(generating|pending)$/)
	{
		sleep($target ? 0.01 : 0.05 + rand(0.25));
		my ($pid, $running, $pending) = split /\|/, $node->safe_psql('postgres', q{
			SELECT (SELECT pid FROM pg_stat_activity WHERE backend_type = 'hagenkit dispatcher')
				|| '|' || coalesce((SELECT string_agg(DISTINCT step, ',') FROM hagen.job
									WHERE status = 'running' AND kind IN ('clip', 'transition')), '')
				|| '|' || coalesce((SELECT string_agg(DISTINCT step, ',') FROM hagen.job
									WHERE status IN ('queued', 'running') AND kind IN ('clip', 'transition')), '')});
		next if !$pid || $pending =~ /submit|image_/ || status($p) ne 'generating';
		next if $target && $pending !~ /\b($target)\b/;
		$target = undef;
		my $at = server_now();
		kill 'KILL', $pid;
		$kills++;
		# The steps the project's jobs are at (running, or waiting for their next turn).
		$steps{$_}++ for split /,/, ($pending || 'none');
		wait_workers($at);
	}
	# And the compile worker, while it is compiling or uploading.
	if (status($p) eq 'compiling')
	{
		my $pid = $node->safe_psql('postgres',
			"SELECT pid FROM pg_stat_activity WHERE backend_type = 'hagenkit compile worker'");
		my $at = server_now();
		if ($pid)
		{
			kill 'KILL', $pid;
			$kills++;
			$steps{compile}++;
			wait_workers($at);
		}
	}
	is(wait_done($p), 'completed|', "run $runs completes through the kills ($kills so far)");
	is(ledger_count() - $before, 13, "run $runs paid each clip and transition exactly once");
	is(final_sha($p), $reference, "run $runs gives the same final video, byte for byte");
}
cmp_ok($kills, '>=', 24, "the workers were killed $kills times");
note('steps the jobs were at when killed: ' . join(', ', map { "$_=$steps{$_}" } sort keys %steps));
ok(($steps{poll} // 0) > 0 && ($steps{compile} // 0) > 0
	  && ($steps{result} // 0) + ($steps{download} // 0) + ($steps{store} // 0) > 0,
	'kills landed while polling, while fetching results or moving files, and while compiling');

run(qq{curl -sf -X POST -H 'content-type: application/json' -d '{"polls_before_completed":1}' $fal/_sim/config >/dev/null});

# 3. An immediate shutdown of the whole server, twice, mid-run.
$before = ledger_count();
$p = make_project('ws-immediate');
$node->safe_psql('postgres', "SELECT hagen.start_video('$p')");
for my $n (1 .. 2)
{
	# Once every submit has been answered (a submit on the wire at the
	# moment of the crash is never resent: see 005), mid-run.
	$node->poll_query_until('postgres', qq{SELECT bool_and(request_id IS NOT NULL) FROM hagen.job
		WHERE project_id = '$p' AND kind IN ('clip', 'transition')});
	sleep(0.4);
	$node->stop('immediate');
	$node->start;
}
is(wait_done($p), 'completed|', 'a project survives two immediate shutdowns');
is(ledger_count() - $before, 13, 'and still pays each generation once');
is(final_sha($p), $reference, 'and gives the same video');

# 4. The compile helper itself killed mid-compile: the compile is retried.
$node->safe_psql('postgres', "ALTER SYSTEM SET hagen.compile_helper = '$dir/slow-hagen-compile'");
open my $fh, '>', "$dir/slow-hagen-compile" or die;
print $fh "#!/bin/sh\n# hagen-compile, slowed down so that it can be killed while it works.\n"
  . "echo '{\"progress\":0.01,\"segment\":1}'\nsleep 2\nexec " . helper_path() . " \"\$@\"\n";
close $fh;
chmod 0755, "$dir/slow-hagen-compile";
$node->reload;
$p = make_project('ws-helper-killed');
$node->safe_psql('postgres', "SELECT hagen.start_video('$p')");
$node->poll_query_until('postgres', "SELECT status = 'compiling' FROM hagen.video_project WHERE id = '$p'");
sleep(0.5);
my $killed = 0;
for (1 .. 50)
{
	$killed = kill('KILL', split(' ', `pgrep -f '$p/compile_[0-9_]*/manifest.json'`));
	last if $killed;
	sleep(0.1);
}
ok($killed, 'the compile helper was killed mid-compile');
is(wait_done($p), 'completed|', 'the compile is retried and the project completes');
is(final_sha($p), $reference, 'with the same video');
like($node->safe_psql('postgres', "SELECT string_agg(message, ' | ') FROM hagen.job_log WHERE project_id = '$p' AND level <> 'debug'"),
	qr/crashed \(signal 9/, 'the job log says the helper was killed');

# No secret appears anywhere in the server's log of the whole run.
my $server_log = slurp_file($node->logfile);
for my $secret (qw(sim-secret crash-secret))
{
	unlike($server_log, qr/\Q$secret\E/, "the server log never contains the secret $secret");
}

$node->stop;
stop_servers();
done_testing();
