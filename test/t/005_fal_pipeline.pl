# Clip generation end to end against the Fal.ai simulator and the local S3
# server: images through Fal storage, submit, poll, result, download,
# store; each clip submitted exactly once; faults on every endpoint; a
# failing model; the dispatcher killed at several points.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../lib";
use HagenTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

need_servers();
need_ffmpeg();

my $dir = $HagenTest::dir;
my $s3 = s3_server(key => 'pipeline-key', secret => 'pipeline-secret');
my $fal = fal_sim();

# Property photos, served by the S3 server like a public bucket.
put_photos($s3, 20);

my $node = pipeline_node('pipeline', fal => $fal, s3 => $s3, s3_key => 'pipeline-key', s3_secret => 'pipeline-secret',
	settings => [ 'hagen.compile_workers' => 0, 'hagen.max_attempts' => 20, 'restart_after_crash' => 'on' ]);

sub sim
{
	my ($path, $json) = @_;
	return $json
	  ? `curl -sf -X POST -H 'content-type: application/json' -d '$json' $fal/_sim/$path`
	  : `curl -sf $fal/_sim/$path`;
}

# A started project of n clips (the second with a seamless transition).
# Its photos go to Fal as they are: this cluster has no compile worker to
# fit them to the aspect ratio (framing; test/t/016_app_users.pl).
sub start_project
{
	my ($ws, $n) = @_;
	my $p = $node->safe_psql('postgres', "SELECT hagen.create_project('$ws', framing => 'none')");
	for my $i (0 .. $n - 1)
	{
		$node->safe_psql('postgres', qq{SELECT hagen.add_clip('$p', '$s3/videos/photos/$i.jpg',
			room_type => (ARRAY['exterior', 'living_room', 'kitchen', 'bedroom'])[$i % 4 + 1],
			transition_type => CASE WHEN $i = 1 THEN 'seamless' ELSE 'cut' END)});
	}
	$node->safe_psql('postgres', "SELECT hagen.start_video('$p')");
	return $p;
}

sub wait_generated
{
	my ($p, $timeout) = @_;
	local $PostgreSQL::Test::Utils::timeout_default = $timeout // 180;
	return $node->poll_query_until('postgres',
		"SELECT status IN ('compiling', 'failed', 'completed') FROM hagen.video_project WHERE id = '$p'");
}

sub counts
{
	my ($p) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT count(*) FILTER (WHERE status = 'completed') || '/' || count(*)
		FROM hagen.video_clip WHERE project_id = '$p'});
}

# Submits per request id in the ledger: every one must appear once.
sub ledger_submits
{
	my $l = sim('ledger');
	my @ids = $l =~ /"request_id":"([^"]+)"/g;
	return scalar @ids;
}

# 1. The whole generation, undisturbed.
my $p = start_project('ws-e2e', 4);
ok(wait_generated($p), 'a project of four clips and a transition is generated');
is(counts($p), '4/4', 'every clip completed');
is($node->safe_psql('postgres', "SELECT status FROM hagen.video_project WHERE id = '$p'"),
	'compiling', 'and the project went on to its compile');
my $urls = $node->safe_psql('postgres', qq{
	SELECT string_agg(clip_url, ' ') || ' ' || string_agg(transition_clip_url, ' ')
	FROM hagen.video_clip WHERE project_id = '$p'});
my @urls = split ' ', $urls;
is(scalar(@urls), 5, 'four clip URLs and one transition URL are recorded');
my $all_videos = 1;
for my $u (@urls)
{
	my $probe = `curl -sf '$u' -o $dir/probe.mp4 && ffprobe -v error -show_entries format=duration -of csv=p=0 $dir/probe.mp4`;
	$all_videos = 0 unless $probe =~ /^5\.0/;
}
ok($all_videos, 'each is a 5 s MP4 in the bucket under the project\'s path');
like($urls[0], qr{/videos/ws-e2e/videos/$p/[0-9a-f-]+\.mp4$}, 'at {workspace}/videos/{project}/{clip}.mp4');
my $ledger = sim('ledger');
is(ledger_submits(), 5, 'the provider was paid for exactly five generations');
my $requests = sim('requests');
my @submits = $requests =~ m{"method":"POST","path":"/queue/fal-ai/kling-video/v2\.6/pro/image-to-video"}g;
is(scalar @submits, 5, 'and received exactly five submits');
like($ledger, qr/"seconds":5,"audio":false,"cents":35/, 'billed as 5 s without audio');
my @uploads = $requests =~ m{"method":"PUT","path":"/cdn/upload/}g;
is(scalar @uploads, 6, 'the five distinct images (and the end image of the transition) went through Fal storage');

# 2. Faults on every endpoint: the project still completes, within limits.
sim('reset');
sim('config', '{"faults":{"submit":[{"status":429,"p":0.05,"retry_after":0},{"status":503,"p":0.05}],'
	  . '"status":[{"status":500,"p":0.1},{"status":429,"p":0.05},{"drop":true,"p":0.02},{"malformed":true,"p":0.03}],'
	  . '"result":[{"status":502,"p":0.1},{"drop":true,"p":0.02},{"truncated":true,"p":0.03}],'
	  . '"initiate":[{"status":500,"p":0.1},{"status":429,"p":0.05}],'
	  . '"upload":[{"status":503,"p":0.1},{"drop":true,"p":0.02}],'
	  . '"cdn":[{"status":500,"p":0.1},{"drop":true,"p":0.02}]}}');
$p = start_project('ws-faults', 20);
ok(wait_generated($p, 300), 'with 5xx, 429, dropped connections, malformed JSON and truncated bodies on every endpoint, 20 clips are generated');
my $done = counts($p);
my ($ok_clips) = $done =~ m{^(\d+)/};
# A submit refused with 503 is retried; the ones whose connection dropped
# after sending are not (they may have been billed): nothing else may fail.
my $unconfirmed = $node->safe_psql('postgres',
	"SELECT count(*) FROM hagen.job WHERE project_id = '$p' AND submit_unconfirmed");
is($ok_clips + $unconfirmed, 20, "all 20 clips completed but the unconfirmed submits ($done, $unconfirmed unconfirmed)");
cmp_ok($node->safe_psql('postgres', qq{
		SELECT count(*) FROM hagen.job_log WHERE project_id = '$p' AND level = 'warning'
		AND message LIKE '%retrying in%'}), '>', 5, 'back-off is visible in the job log');
my %seen;
my @dup = grep { $seen{$_}++ } (sim('ledger') =~ /"request_id":"([^"]+)"/g);
is(scalar @dup, 0, 'no generation was paid twice');
sim('config', '{"faults":{}}');

# 3. A failing model: that clip fails with Fal's message, the project carries on.
sim('config', '{"fail_jobs":1}');
$p = start_project('ws-model-fails', 3);
ok(wait_generated($p), 'a project with a failing generation finishes generating');
like($node->safe_psql('postgres',
		"SELECT string_agg(coalesce(error_message, ''), '') FROM hagen.video_clip WHERE project_id = '$p'")
	  . $node->safe_psql('postgres',
		"SELECT coalesce(last_error, '') FROM hagen.job WHERE project_id = '$p' AND status = 'failed' LIMIT 1"),
	qr/content policy/, 'the failed generation carries Fal\'s message');
is($node->safe_psql('postgres', "SELECT status FROM hagen.video_project WHERE id = '$p'"),
	'compiling', 'and the project goes on with the rest');

# 4. The dispatcher killed with SIGKILL at several points: every clip
# completes, and nothing is submitted twice.
sim('reset');
sim('config', '{"processing_s":2,"faults":{"initiate":[{"stall_s":1,"count":8}],"cdn":[{"stall_s":1.5,"count":2}]}}');
my $before = ledger_submits();
$p = start_project('ws-killed', 4);
my @points = (
	[ 'right after the start', 'SELECT true' ],
	[ 'while images go to Fal storage', "SELECT count(*) > 0 FROM hagen.job WHERE project_id = '$p' AND step = 'image_initiate' AND status = 'running'" ],
	[ 'while polling', "SELECT count(*) > 0 FROM hagen.job WHERE project_id = '$p' AND step = 'poll' AND NOT EXISTS (SELECT 1 FROM hagen.job WHERE project_id = '$p' AND step = 'submit' AND status = 'running')" ],
	[ 'mid-download', "SELECT count(*) > 0 FROM hagen.job WHERE project_id = '$p' AND step = 'download' AND status = 'running'" ],
);
for my $pt (@points)
{
	my ($what, $cond) = @$pt;
	{
		local $PostgreSQL::Test::Utils::timeout_default = 60;
		$node->poll_query_until('postgres', $cond) or diag("never reached: $what");
	}
	my $pid = $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'hagenkit dispatcher'");
	kill 'KILL', $pid if $pid;
	ok($node->poll_query_until('postgres', qq{
			SELECT count(*) = 1 FROM pg_stat_activity
			WHERE backend_type = 'hagenkit dispatcher' AND pid <> ${\($pid || 0)}}),
		"the dispatcher was killed $what and came back");
}
ok(wait_generated($p), 'the project is generated despite the kills');
my $killed_done = counts($p);
my $killed_unconfirmed = $node->safe_psql('postgres',
	"SELECT count(*) FROM hagen.job WHERE project_id = '$p' AND submit_unconfirmed");
is($killed_done, '4/4', "every clip completed ($killed_unconfirmed submits were cut off mid-request)")
  or diag($node->safe_psql('postgres', "SELECT string_agg(coalesce(error_message,''), ' | ') FROM hagen.video_clip WHERE project_id = '$p'"));
%seen = ();
@dup = grep { $seen{$_}++ } (sim('ledger') =~ /"request_id":"([^"]+)"/g);
is(scalar @dup, 0, 'and no generation was paid twice');
is(ledger_submits() - $before, 5, 'exactly one paid submit per clip and transition');

$node->stop;
stop_servers();
done_testing();
