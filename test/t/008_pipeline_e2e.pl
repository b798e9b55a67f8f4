# The whole pipeline end to end, on both providers: seamless transitions
# generated in parallel with the clips (a project takes one provider round,
# not two), xAI as provider, a clip whose model call fails, and cancel then
# retry, each ending in a final video checked with hagen-compile probe.
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

my $s3 = s3_server(key => 'e2e-key', secret => 'e2e-secret');
my $fal = fal_sim();
my $xai = xai_sim(key => 'xai-e2e-key');

put_photos($s3, 6);
put_music($s3, 'music/calm.mp3', 12, 330);

my $node = pipeline_node('pipeline_e2e', fal => $fal, xai => $xai, xai_key => 'xai-e2e-key', s3 => $s3,
	s3_key => 'e2e-key', s3_secret => 'e2e-secret', settings => [ 'hagen.compile_workers' => 1 ]);

sub sim
{
	my ($base, $path, $json) = @_;
	return $json
	  ? `curl -sf -X POST -H 'content-type: application/json' -d '$json' $base/_sim/$path`
	  : `curl -sf '$base/_sim/$path'`;
}

sub ledger_count { my ($base) = @_; my @ids = sim($base, 'ledger') =~ /"request_id":"([^"]+)"/g; return scalar @ids; }

# A project of n clips from the photos; seamless transitions after the
# clips listed.
sub make_project
{
	my ($ws, $n, $seamless, %opt) = @_;
	my %s = map { $_ => 1 } @$seamless;
	my $music = $opt{music}
	  ? "(SELECT hagen.add_music_track('Calm', '$s3/videos/music/calm.mp3'))" : 'NULL';
	my $p = $node->safe_psql('postgres', "SELECT hagen.create_project('$ws', provider => '"
		  . ($opt{provider} // 'fal') . "', music_track_id => $music, framing => '" . ($opt{framing} // 'crop') . "')");
	for my $i (0 .. $n - 1)
	{
		$node->safe_psql('postgres', qq{SELECT hagen.add_clip('$p', '$s3/videos/photos/$i.jpg',
			room_type => (ARRAY['exterior', 'living_room', 'kitchen', 'bedroom', 'bathroom', 'backyard'])[$i + 1],
			transition_type => '@{[ $s{$i} ? 'seamless' : 'cut' ]}')});
	}
	return $p;
}

sub wait_status
{
	my ($p, $want, $timeout) = @_;
	local $PostgreSQL::Test::Utils::timeout_default = $timeout // 180;
	my $ok = $node->poll_query_until('postgres',
		"SELECT status IN ($want) FROM hagen.video_project WHERE id = '$p'");
	diag($node->safe_psql('postgres', "SELECT status || ' ' || progress::text || ' ' || coalesce(error_message, '')
		FROM hagen.video_project WHERE id = '$p'")) unless $ok;
	return $node->safe_psql('postgres',
		"SELECT status || '|' || coalesce(error_message, '') FROM hagen.video_project WHERE id = '$p'");
}

sub final_probe
{
	my ($p, $name) = @_;
	my $url = $node->safe_psql('postgres', "SELECT final_video_url FROM hagen.video_project WHERE id = '$p'");
	system("curl -sf '$url' -o $dir/$name.mp4") == 0 or return {};
	return probe_media("$dir/$name.mp4");
}

sub bucket_keys
{
	my ($prefix) = @_;
	my $xml = `curl -sf '$s3/videos?list-type=2&prefix=$prefix'`;
	return sort ($xml =~ m{<Key>([^<]+)</Key>}g);
}

# 1. Transitions in parallel: with a provider latency L, the generation of
# a project with seamless transitions takes one round (under 1.3 L), not
# two (the transitions waiting for their clips).
my $L = 6;
sim($fal, 'config', qq({"queue_s":0,"processing_s":$L}));
# (The photos go as they are: fitting them to the aspect ratio, one after
# another on the compile worker, comes before the round; 016 tests it.)
my $p = make_project('ws-parallel', 4, [0, 2], framing => 'none');
my $t0 = time;
$node->safe_psql('postgres', "SELECT hagen.start_video('$p')");
$node->poll_query_until('postgres', "SELECT status <> 'generating' FROM hagen.video_project WHERE id = '$p'");
my $gen = time - $t0;
ok($gen < 1.3 * $L, sprintf('4 clips + 2 transitions are generated in %.2f s with a provider latency of %d s (< 1.3 L)', $gen, $L));
is(wait_status($p, "'completed', 'failed'"), 'completed|', 'and compiled');
my $pr = final_probe($p, 'parallel');
ok(abs(($pr->{decoded}{video_end} // 0) - 30) <= 1 / 24, "the final video is 4 clips + 2 transitions long ($pr->{decoded}{video_end} s)");
sim($fal, 'config', '{"queue_s":0.05,"processing_s":0.2}');

# 2. xAI as the provider, with a transition and music.
$p = make_project('ws-xai', 3, [1], music => 1, provider => 'xai');
my $xai_before = ledger_count($xai);
$node->safe_psql('postgres', "SELECT hagen.start_video('$p')");
is(wait_status($p, "'completed', 'failed'"), 'completed|', 'an xAI project completes');
is(ledger_count($xai) - $xai_before, 4, 'xAI was paid for three clips and one transition, once each');
$pr = final_probe($p, 'xai');
my ($vs) = grep { $_->{type} eq 'video' } @{ $pr->{streams} // [] };
my ($as) = grep { $_->{type} eq 'audio' } @{ $pr->{streams} // [] };
ok(abs(($pr->{decoded}{video_end} // 0) - 20) <= 1 / 24, "its final video is 3 clips + 1 transition long ($pr->{decoded}{video_end} s)");
ok($as && abs($as->{duration} - $vs->{duration}) <= 1 / 24, 'with the music track under it, ending with the video');
my @keys = bucket_keys("ws-xai/videos/$p/");
my @clips = split /\n/, $node->safe_psql('postgres', "SELECT id FROM hagen.video_clip WHERE project_id = '$p' ORDER BY sequence_order");
my $track = $node->safe_psql('postgres', "SELECT music_track_id FROM hagen.video_project WHERE id = '$p'");
# The music is kept beside the clips, so that every input of the compile is
# in the bucket; so are the photos xAI was given, fitted to the aspect ratio
# (one per clip and transition job).
my @images = map { my ($j) = $_; "ws-xai/videos/$p/image_${j}_0.jpg" } split /\n/, $node->safe_psql('postgres',
	"SELECT id FROM hagen.job WHERE project_id = '$p' AND kind IN ('clip', 'transition')");
my @want = sort(map({ "ws-xai/videos/$p/$_.mp4" } @clips), "ws-xai/videos/$p/transition_$clips[1].mp4",
	"ws-xai/videos/$p/final.mp4", "ws-xai/videos/$p/thumbnail.jpg", "ws-xai/videos/$p/music_$track", @images);
is(join(' ', @keys), join(' ', @want), 'every object is in the bucket under the fixed layout (the fitted photos too), and nothing else');
my $cost = $node->safe_psql('postgres', "SELECT actual_cost_cents FROM hagen.video_project WHERE id = '$p'");
my @charged = @{ decode_json(sim($xai, 'ledger')) }[$xai_before .. ledger_count($xai) - 1];
my $charged = 0;
$charged += $_->{cents} for @charged;
is($cost, $charged, "the cost is what xAI charged, read from its usage.cost_in_usd_ticks ($charged cents for 20 s)");

# 3. One clip's model call fails: the video is made from the rest and the
# project says which clip was left out.
sim($fal, 'config', '{"fail_jobs":1}');
$p = make_project('ws-partial', 3, []);
$node->safe_psql('postgres', "SELECT hagen.start_video('$p')");
my $r = wait_status($p, "'completed', 'failed'");
like($r, qr/^completed\|clip \d left out \(.*content_policy_violation|^completed\|clip \d left out \(.*(refused|rejected|policy)/i,
	'one failed clip: the project completes and names the clip left out');
note($r);
$pr = final_probe($p, 'partial');
ok(abs(($pr->{decoded}{video_end} // 0) - 10) <= 1 / 24, "the video is made of the two clips that completed ($pr->{decoded}{video_end} s)");
sim($fal, 'config', '{"fail_jobs":0}');

# 4. Cancel mid-generation, then retry.  Two jobs run at a time at the
# provider, so some clips are done and others in flight when we cancel.
sim($fal, 'config', '{"queue_s":0,"processing_s":1.5,"max_concurrent":2,"honor_cancel":true}');
$p = make_project('ws-cancel', 5, [1]);
my $fal_before = ledger_count($fal);
$node->safe_psql('postgres', "SELECT hagen.start_video('$p')");
$node->poll_query_until('postgres', "SELECT count(*) >= 1 FROM hagen.video_clip WHERE project_id = '$p' AND status = 'completed'");
$node->safe_psql('postgres', "SELECT hagen.cancel_video('$p')");
is(wait_status($p, "'canceled'"), 'canceled|', 'cancel_video leaves the project canceled');
my $submitted = ledger_count($fal) - $fal_before;
sleep 2;
is(ledger_count($fal) - $fal_before, $submitted, "nothing more is submitted after the cancel ($submitted were)");
my $done = $node->safe_psql('postgres', qq{SELECT count(*) FILTER (WHERE status = 'completed')
	+ count(*) FILTER (WHERE transition_status = 'completed') FROM hagen.video_clip WHERE project_id = '$p'});
ok($done >= 1 && $done < 6, "completed clips are kept ($done of 6 generations)");
# Every request that was in flight at the provider got a cancel.
$node->poll_query_until('postgres', "SELECT count(*) = 0 FROM hagen.job WHERE project_id = '$p' AND status IN ('queued', 'running')");
my @inflight = split /\n/, $node->safe_psql('postgres', qq{SELECT request_id FROM hagen.job
	WHERE project_id = '$p' AND kind IN ('clip', 'transition') AND status = 'canceled' AND request_id IS NOT NULL
	  AND step IN ('submit', 'poll', 'result')});
my $log = sim($fal, 'requests?method=PUT');
my @missing = grep { $log !~ m{/requests/\Q$_\E/cancel} } @inflight;
ok(@inflight >= 1 && !@missing, scalar(@inflight) . ' requests in flight at the cancel each received a cancel')
  or diag("no cancel for: @missing");
sim($fal, 'config', '{"processing_s":0.2,"max_concurrent":0}');
my $before_retry = ledger_count($fal);
$node->safe_psql('postgres', "SELECT hagen.retry_video('$p')");
is(wait_status($p, "'completed', 'failed'"), 'completed|', 'retry_video finishes the project');
is(ledger_count($fal) - $before_retry, 6 - $done, 'only the missing clips and transitions were generated again (' . (6 - $done) . ')');
$pr = final_probe($p, 'retried');
ok(abs(($pr->{decoded}{video_end} // 0) - 30) <= 1 / 24, "the final video has all five clips and the transition ($pr->{decoded}{video_end} s)");

# No secret appears anywhere in the server's log of the whole run.
my $server_log = slurp_file($node->logfile);
for my $secret (qw(sim-secret e2e-secret xai-e2e-key))
{
	unlike($server_log, qr/\Q$secret\E/, "the server log never contains the secret $secret");
}

$node->stop;
stop_servers();
done_testing();
