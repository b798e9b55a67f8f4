# The compile as steps of a job: its inputs fetched by ordinary guarded
# requests (a music URL on the metadata service fails the project at once,
# before hagen-compile ever starts), its outputs stored through the storing
# steps of clips (the final video in parts, resumed after the dispatcher is
# killed in the middle; an upload answered 503 retried without compiling
# again), no work files left whatever the ending, and a helper that never
# outlives its worker (the server stopped fast, then immediately, in the
# middle of a compile).
use strict;
use warnings;

use Digest::SHA;
use FindBin;
use lib "$FindBin::Bin/../lib";
use HagenTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

need_servers();
need_ffmpeg();

my $dir = $HagenTest::dir;
my $requests = "$dir/s3-requests.log";
my $s3 = s3_server(key => 'steps-key', secret => 'steps-secret',
	args => "--request-log $requests --part-delay-ms 400");

# The real helper, behind a stand-in that notes every run (it execs, so the
# helper is the worker's own child).
my $runs = "$dir/helper-runs.txt";
open my $wh, '>', "$dir/hagen-compile" or die;
print $wh "#!/bin/sh\necho \"\$*\" >> $runs\nexec " . helper_path() . " \"\$@\"\n";
close $wh;
chmod 0755, "$dir/hagen-compile";

# Clips made with the ffmpeg CLI: three large 1080p ones (about 7 MB each,
# so that the final video is stored in 5 MB parts) and a small one.
run("ffmpeg -loglevel error -y -f lavfi -i 'testsrc2=s=1920x1080:r=24:d=5' -f lavfi -i 'sine=f=440:d=5'"
	  . " -c:v libx264 -preset ultrafast -b:v 11M -maxrate 11M -bufsize 4M -pix_fmt yuv420p -c:a aac"
	  . " -shortest $dir/big.mp4");
run("ffmpeg -loglevel error -y -f lavfi -i 'testsrc2=s=320x180:r=24:d=2' -f lavfi -i 'sine=f=330:d=2'"
	  . " -c:v libx264 -pix_fmt yuv420p -c:a aac -shortest $dir/small.mp4");
my $music_url = put_music($s3, 'music/m.mp3', 6, 220);

my $node = pipeline_node('steps', s3 => $s3, s3_key => 'steps-key', s3_secret => 'steps-secret',
	settings => [ 'restart_after_crash' => 'on', 'hagen.compile_workers' => 1,
		'hagen.compile_helper' => "$dir/hagen-compile", 'hagen.s3_multipart_threshold' => '5MB',
		'hagen.s3_part_size' => '5MB', 'hagen.s3_upload_concurrency' => 2, 'hagen.fal_key' => 'unused:key' ]);
my $music = $node->safe_psql('postgres', "SELECT hagen.add_music_track('Low hum', '$music_url')");

sub helper_runs
{
	my ($p) = @_;
	return 0 unless -e $runs;
	return scalar(grep { /\b$p\// } split /\n/, slurp_file($runs));
}

sub sql { return $node->safe_psql('postgres', $_[0]); }

# A project whose clips are generated and stored in the bucket already (as
# after a run whose work files were cleaned up): starting the compile is
# what is left, and its fetch steps bring the clips back.
sub prepared_project
{
	my ($ws, $clip, $n, %o) = @_;
	my $p = sql(qq{SELECT hagen.create_project('$ws', music_track_id => @{[ $o{music} ? "'$o{music}'" : 'NULL' ]},
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

sub cleaned
{
	my ($p) = @_;
	return $node->poll_query_until('postgres', qq{SELECT count(*) = 1 FROM hagen.job
		WHERE kind = 'cleanup' AND state ->> 'dir' = '$p' AND status = 'succeeded'}) && !-e "$dir/work/$p";
}

sub sha { my ($file) = @_; return Digest::SHA->new(256)->addfile($file)->hexdigest; }

# 1. A music track on the metadata service (an operator typed it in; the
# API would refuse it): the fetch is refused by the guard at once, the
# project fails naming the address, hagen-compile never starts.
my $bad_music = sql(q{INSERT INTO hagen.music_track (name, audio_url)
	VALUES ('Instance data', 'http://169.254.169.254/latest/meta-data/song.mp3') RETURNING id});
my $p = prepared_project('ws-meta', "$dir/small.mp4", 2, music => $bad_music);
my $r = wait_project($node, $p, 60);
like($r, qr/^failed\|refused to fetch the music track "Instance data" from http:\/\/169\.254\.169\.254\/.*169\.254\.169\.254/,
	'a music URL on the metadata service fails the project, naming the address');
note($r);
is(sql(qq{SELECT total_attempts FROM hagen.job WHERE project_id = '$p' AND kind = 'fetch'
	AND state ->> 'url' LIKE '%169.254%'}), '1', 'on the first try');
is(helper_runs($p), 0, 'hagen-compile was never started');
ok(cleaned($p), 'the failed project leaves nothing in the work directory');

# 2. A final video stored in parts, the dispatcher killed while they go up.
# A reference first: the same project, undisturbed.
my $ref = prepared_project('ws-ref', "$dir/big.mp4", 3, music => $music);
is(wait_project($node, $ref, 180), 'completed|', 'a project of three 1080p clips completes');
my ($ref_parts, $ref_bytes) = split /\|/, sql(qq{SELECT state ->> 'part_count', state ->> 'bytes'
	FROM hagen.job WHERE project_id = '$ref' AND kind = 'compile'});
ok($ref_parts >= 3, "its final video ($ref_bytes bytes) is stored in $ref_parts parts");
run("curl -sf '" . sql("SELECT final_video_url FROM hagen.video_project WHERE id = '$ref'") . "' -o $dir/ref.mp4");
is(-s "$dir/ref.mp4", $ref_bytes, 'and reads back whole');
my $pr = probe_media("$dir/ref.mp4");
ok(abs(($pr->{decoded}{video_end} // 0) - 15) < 0.05 && ($pr->{decoded}{video_frames} // 0) == 360,
	'decoding it gives 15 s and 360 frames');
ok(cleaned($ref), 'the completed project leaves nothing in the work directory');

$p = prepared_project('ws-killed', "$dir/big.mp4", 3, music => $music);
ok($node->poll_query_until('postgres', qq{SELECT step = 'upload_parts' AND jsonb_typeof(state -> 'parts') = 'object'
		AND (SELECT count(*) FROM jsonb_object_keys(state -> 'parts')) >= 1
		FROM hagen.job WHERE project_id = '$p' AND kind = 'compile'}),
	'the final video goes up in parts');
my $dpid = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'hagenkit dispatcher'");
my @recorded = split /\n/, sql(qq{SELECT jsonb_object_keys(state -> 'parts') FROM hagen.job
	WHERE project_id = '$p' AND kind = 'compile'});
kill 'KILL', $dpid;
note("dispatcher $dpid killed with parts @recorded recorded");
is(wait_project($node, $p, 180), 'completed|', 'the upload resumes after the kill and the project completes');
is(helper_runs($p), 1, 'hagen-compile ran exactly once');
run("curl -sf '" . sql("SELECT final_video_url FROM hagen.video_project WHERE id = '$p'") . "' -o $dir/killed.mp4");
is(sha("$dir/killed.mp4"), sha("$dir/ref.mp4"), 'the stored video is byte for byte the undisturbed one');
my $key = sql("SELECT hagen.get_video_path('ws-killed', '$p', 'final.mp4')");
my %sent;
for (split /\n/, slurp_file($requests))
{
	$sent{$1}++ if m{^PUT /videos/\Q$key\E\?partNumber=(\d+)&\S* 200 };
}
is(scalar(grep { ($sent{$_} // 0) != 1 } @recorded), 0,
	'every part recorded before the kill reached the server exactly once');
ok(cleaned($p), 'and the work directory is clean again');

# 3. A final upload answered 503 three times: the upload is retried (with
# back-off), the video is not compiled again.
$p = prepared_project('ws-503', "$dir/small.mp4", 2);
run("curl -sf -X PUT '$s3/_faults?match=$p/final.mp4&method=PUT&count=3&status=503'");
is(wait_project($node, $p, 120), 'completed|', 'a final upload answered 503 three times then 200 completes');
is(helper_runs($p), 1, 'with one compile');
is(sql(qq{SELECT count(*) FROM hagen.job_log WHERE project_id = '$p'
	AND message ~ '^step store failed \\(attempt [123]\\), retrying in \\d+ ms: upload of .*final\\.mp4 to storage failed: HTTP 503: SlowDown'}),
	'3', 'the job log shows the upload retried three times on SlowDown');
my $puts = () = slurp_file($requests) =~ m{^PUT /videos/\S*$p/final\.mp4 \d+}mg;
is($puts, 4, 'four PUTs of final.mp4 reached the server');

# 4. Canceled in the middle of the compile: the helper is stopped, the work
# files go.
$p = prepared_project('ws-cancel', "$dir/big.mp4", 3, crossfade => 0.5);
ok($node->poll_query_until('postgres', qq{SELECT EXISTS (SELECT 1 FROM hagen.job
	WHERE project_id = '$p' AND lane = 'compile' AND status = 'running')}),
	'a re-encoding compile is running (its chunks: 15 s of clips)');
sleep(1);
sql("SELECT hagen.cancel_video('$p')");
ok($node->poll_query_until('postgres', qq{SELECT status = 'canceled' FROM hagen.job
	WHERE project_id = '$p' AND kind = 'compile'}), 'canceling the project stops its compile');
ok(cleaned($p), 'the canceled project leaves nothing in the work directory');
is(`pgrep -f '[h]agen-compile compile $p/'`, '', 'and no helper of it runs');

# 5. Deleted in the middle of the compile.
$p = prepared_project('ws-deleted', "$dir/big.mp4", 3, crossfade => 0.5);
ok($node->poll_query_until('postgres', qq{SELECT EXISTS (SELECT 1 FROM hagen.job
	WHERE project_id = '$p' AND lane = 'compile' AND status = 'running')}), 'another compile is running');
ok(-d "$dir/work/$p", 'its work directory holds its files');
sql("DELETE FROM hagen.video_project WHERE id = '$p'");
ok(cleaned($p), 'deleting the project removes its work files (once its helper has stopped)');
is(`pgrep -f '[h]agen-compile compile $p/'`, '', 'and its helper was stopped');

# 6. The server stopped, fast and then immediately, in the middle of a
# compile: no helper is left behind, and the project completes after.
$p = prepared_project('ws-stop', "$dir/big.mp4", 3, crossfade => 0.5);
for my $mode ('fast', 'immediate')
{
	my $helper = '';
	for (1 .. 600)
	{
		$helper = `pgrep -f '[h]agen-compile compile $p/'`;
		last if $helper;
		select(undef, undef, undef, 0.1);
	}
	ok($helper, "a helper is compiling when the server is stopped ($mode)");
	$node->stop($mode);
	my $left = '';
	for (1 .. 20)
	{
		$left = `pgrep -f '[h]agen-compile compile $p/'`;
		last unless $left;
		select(undef, undef, undef, 0.25);
	}
	is($left, '', "no hagen-compile is left after the server stopped ($mode)");
	$node->start;
}
is(wait_project($node, $p, 300), 'completed|', 'the project completes after the restarts');
ok(cleaned($p), 'and leaves nothing in the work directory');

# 7. What the work directory holds, per project, for operators; a sweep
# removes what no project uses any more.
mkdir "$dir/work/stray";
run("head -c 1000 /dev/zero > $dir/work/stray/left-behind.bin");
is(sql("SELECT files || ' ' || bytes || ' ' || (project_id IS NULL) FROM hagen.work_usage WHERE dir = 'stray'"),
	'1 1000 true', 'hagen.work_usage shows a stray directory, its files and bytes');
reconfigure($node, 'hagen.work_retention' => '1s');
sleep(2);
ok(sql('SELECT hagen.sweep_work_dir()') >= 1, 'the sweep queues the removal of what is older than hagen.work_retention');
ok($node->poll_query_until('postgres', "SELECT NOT EXISTS (SELECT 1 FROM hagen.work_usage WHERE dir = 'stray')"),
	'and the dispatcher removes it');

$node->stop;
done_testing();
