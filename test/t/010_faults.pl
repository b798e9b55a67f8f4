# Faults on every external service with the whole pipeline running: xAI
# answering 429 (with and without Retry-After), 503, 500, malformed JSON,
# dropped and stalled connections and truncated downloads; the storage
# server down for a minute mid-run; a provider that stays down.  Projects
# complete within their limits, back-off shows in the job log, and a dead
# provider fails the project with a clear message instead of hanging.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../lib";
use HagenTest;
use JSON::PP;
use Time::HiRes qw(time sleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

need_servers();
need_ffmpeg();

my $dir = $HagenTest::dir;

my %s3_opts = (key => 'f-key', secret => 'f-secret');
my ($s3, $s3_pid) = s3_server(%s3_opts);
my ($s3_port) = $s3 =~ /:(\d+)$/;
my $fal = fal_sim();
my $xai = xai_sim(key => 'xai-f-key');

put_photos($s3, 6);
put_music($s3, 'music/m.mp3', 9, 294);

my $node = pipeline_node('faults', fal => $fal, xai => $xai, xai_key => 'xai-f-key', s3 => $s3, s3_key => 'f-key',
	s3_secret => 'f-secret',
	settings => [ 'hagen.compile_workers' => 1, 'hagen.stall_timeout' => '2s', 'hagen.max_attempts' => 12 ]);

sub sim
{
	my ($base, $path, $json) = @_;
	return $json
	  ? `curl -sf -X POST -H 'content-type: application/json' -d '$json' $base/_sim/$path`
	  : `curl -sf '$base/_sim/$path'`;
}

sub ledger_ids { my ($base) = @_; return (sim($base, 'ledger') =~ /"request_id":"([^"]+)"/g); }

sub make_project
{
	my ($ws, $n, $provider) = @_;
	my $p = $node->safe_psql('postgres', qq{SELECT hagen.create_project('$ws', provider => '$provider',
		music_track_id => (SELECT hagen.add_music_track('M', '$s3/videos/music/m.mp3')))});
	$node->safe_psql('postgres', qq{SELECT hagen.add_clip('$p', '$s3/videos/photos/' || i || '.jpg',
		room_type => 'kitchen', transition_type => CASE WHEN i = 1 THEN 'seamless' ELSE 'cut' END)
		FROM generate_series(0, $n - 1) i});
	return $p;
}

sub wait_done
{
	my ($p, $timeout) = @_;
	local $PostgreSQL::Test::Utils::timeout_default = $timeout // 300;
	$node->poll_query_until('postgres',
		"SELECT status IN ('completed', 'failed', 'canceled') FROM hagen.video_project WHERE id = '$p'")
	  or diag($node->safe_psql('postgres', "SELECT status || ' ' || progress::text FROM hagen.video_project WHERE id = '$p'"));
	return $node->safe_psql('postgres',
		"SELECT status || '|' || coalesce(error_message, '') FROM hagen.video_project WHERE id = '$p'");
}

sub final_seconds
{
	my ($p) = @_;
	my $url = $node->safe_psql('postgres', "SELECT final_video_url FROM hagen.video_project WHERE id = '$p'");
	system("curl -sf '$url' -o $dir/final.mp4") == 0 or return -1;
	my $pr = probe_media("$dir/final.mp4");
	return $pr->{decoded}{video_end} // -1;
}

# The most tries any step of the project's jobs needed, from the job log's
# "step X failed (attempt N), retrying" lines (the last try is N + 1).
sub max_attempts_used
{
	my ($p) = @_;
	return $node->safe_psql('postgres', qq{SELECT coalesce(max(substring(message from 'attempt (\\d+)')::int) + 1, 1)
		FROM hagen.job_log WHERE project_id = '$p' AND message LIKE 'step % failed (attempt %), retrying%'});
}

# 1. xAI misbehaving in every way it can, on every endpoint.
# Rates are kept so that a step rarely needs more than a few tries: the
# back-off doubles from 2 s, and a long unlucky streak would make the test
# wait minutes.
sim($xai, 'config', '{"faults":{'
	  . '"submit":[{"status":429,"retry_after":1,"p":0.1},{"status":429,"p":0.05},{"status":503,"p":0.05}],'
	  . '"status":[{"status":500,"p":0.05},{"status":429,"p":0.03},{"malformed":true,"p":0.03},{"drop":true,"p":0.02},{"stall_s":6,"count":2}],'
	  . '"cdn":[{"truncated":true,"p":0.1},{"status":503,"p":0.05},{"drop":true,"p":0.03},{"stall_s":6,"count":1}]}}');
my $p = make_project('ws-xai-faults', 6, 'xai');
$node->safe_psql('postgres', "SELECT hagen.start_video('$p')");
is(wait_done($p), 'completed|', 'an xAI project completes through 429s, 5xx, malformed JSON, drops, stalls and truncated downloads');
my @ids = ledger_ids($xai);
my %seen;
is(scalar(grep { $seen{$_}++ } @ids), 0, 'no generation was paid twice');
is(scalar @ids, 7, 'six clips and one transition were paid');
ok(abs(final_seconds($p) - 35) <= 1 / 24, 'the final video has all of them (35 s)');
my $faults = sim($xai, 'faults');
my $fired = eval { decode_json($faults) } // {};
ok(ref $fired eq 'HASH' && scalar(grep { $fired->{fired}{$_} } qw(submit status cdn)) == 3,
	"faults fired on submit, status and the CDN: $faults");
cmp_ok($node->safe_psql('postgres', qq{SELECT count(*) FROM hagen.job_log WHERE project_id = '$p'
	AND level = 'warning' AND message LIKE '%retrying in%'}), '>=', 3, 'back-off is visible in the job log');
cmp_ok(max_attempts_used($p), '<=', 12, 'no step went past hagen.max_attempts (' . max_attempts_used($p) . ')');
like($node->safe_psql('postgres', qq{SELECT string_agg(message, ' | ') FROM hagen.job_log WHERE project_id = '$p'}),
	qr/timed out|Timeout|stall|too slow/i, 'a stalled connection was abandoned and retried');
sim($xai, 'config', '{"faults":{}}');

# 2. The storage server down for a minute in the middle of a run.
sim($fal, 'config', '{"processing_s":3}');
$p = make_project('ws-s3-down', 4, 'fal');
$node->safe_psql('postgres', "SELECT hagen.start_video('$p')");
$node->poll_query_until('postgres', "SELECT count(*) > 0 FROM hagen.job WHERE project_id = '$p' AND step = 'poll'");
stop_server($s3_pid);
my $down_at = time;
sleep(60);
($s3, $s3_pid) = s3_server(%s3_opts, port => $s3_port);
note(sprintf('storage was down for %.0f s', time - $down_at));
is(wait_done($p), 'completed|', 'the run completes after the storage server comes back');
ok(abs(final_seconds($p) - 25) <= 1 / 24, 'with every clip and the transition in the final video');
like($node->safe_psql('postgres', qq{SELECT string_agg(message, ' | ') FROM hagen.job_log
	WHERE project_id = '$p' AND level = 'warning'}), qr/retrying in/, 'the outage shows as retries in the job log');
sim($fal, 'config', '{"processing_s":0.2}');

# 3. A provider that stays down: the project fails with a clear message
# once the attempts run out, instead of hanging.
$node->safe_psql('postgres', 'ALTER SYSTEM SET hagen.max_attempts = 4');
$node->reload;
sim($fal, 'config', '{"faults":{"submit":[{"status":503}]}}');
$p = make_project('ws-fal-down', 2, 'fal');
my $billed_before = scalar(ledger_ids($fal));
my $t0 = time;
$node->safe_psql('postgres', "SELECT hagen.start_video('$p')");
my $r = wait_done($p, 120);
like($r, qr/^failed\|all 2 clips failed: clip 0: .*submit.*503/, 'a provider that stays down fails the project, saying why');
note($r);
cmp_ok(time - $t0, '<', 90, sprintf('after its attempts ran out (%.0f s), not hanging', time - $t0));
is($node->safe_psql('postgres', "SELECT string_agg(DISTINCT attempts::text, ',') FROM hagen.job WHERE project_id = '$p' AND kind = 'clip'"),
	'4', 'each job tried its submit exactly hagen.max_attempts times');
is(scalar(ledger_ids($fal)) - $billed_before, 0, 'and nothing was billed');

# No secret appears anywhere in the server's log of the whole run.
my $server_log = slurp_file($node->logfile);
for my $secret (qw(sim-secret f-secret xai-f-key))
{
	unlike($server_log, qr/\Q$secret\E/, "the server log never contains the secret $secret");
}

$node->stop;
stop_servers();
done_testing();
