# The compile end to end with the real hagen-compile: a project generated on
# the Fal.ai simulator, with a seamless transition and music shorter than
# the video, becomes one MP4 in the bucket whose length is the sum of its
# segments; bad media fails its own project with a message naming the
# segment while the server and the other projects carry on; a project with
# a crossfade is re-encoded with its cuts blended.
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

my $helper = helper_path();
ok(-x $helper, "hagen-compile is installed next to the server ($helper)");
my $dir = $HagenTest::dir;
my $s3 = s3_server(key => 'e2e-key', secret => 'e2e-secret');
my $fal = fal_sim();

# Photos and an 8 s music track, served by the S3 server like a public bucket.
put_photos($s3, 4);
put_music($s3, 'music/calm.mp3', 8, 330);

my $node = pipeline_node('compile_e2e', fal => $fal, s3 => $s3, s3_key => 'e2e-key',
	s3_secret => 'e2e-secret', settings => [ 'hagen.compile_workers' => 1 ]);
my $postmaster = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');

sub wait_done { my ($p) = @_; return wait_project($node, $p); }

sub probe { my ($file) = @_; return probe_media($file); }

sub stream { my ($pr, $type) = @_; return (grep { $_->{type} eq $type } @{ $pr->{streams} })[0]; }

# 1. A generated project: four clips, a seamless transition after the
# second, music shorter than the video.
my $p = $node->safe_psql('postgres', q{SELECT hagen.create_project('ws-compile',
	music_track_id => (SELECT hagen.add_music_track('Calm', '} . "$s3/videos/music/calm.mp3" . q{')),
	music_volume => 0.4)});
for my $i (0 .. 3)
{
	$node->safe_psql('postgres', qq{SELECT hagen.add_clip('$p', '$s3/videos/photos/$i.jpg',
		room_type => (ARRAY['exterior', 'living_room', 'kitchen', 'bedroom'])[$i + 1],
		transition_type => CASE WHEN $i = 1 THEN 'seamless' ELSE 'cut' END)});
}
$node->safe_psql('postgres', "SELECT hagen.start_video('$p')");
is(wait_done($p), 'completed|', 'the project is generated and compiled');

my ($final_url, $thumb_url, $duration, $percent, $cost, $clip_costs) = split /\|/, $node->safe_psql('postgres', qq{
	SELECT final_video_url, thumbnail_url, duration, progress ->> 'percent', actual_cost_cents,
		   (SELECT sum(cost_cents) FROM hagen.video_clip WHERE project_id = v.id)
	FROM hagen.video_project v WHERE id = '$p'});
like($final_url, qr{^\Q$s3\E/videos/ws-compile/videos/$p/final\.mp4$}, 'final.mp4 is under the project\'s path');
like($thumb_url, qr{^\Q$s3\E/videos/ws-compile/videos/$p/thumbnail\.jpg$}, 'and so is thumbnail.jpg');
is($percent, '100', 'progress ends at 100 %');
ok($cost > 0 && $cost == $clip_costs, "the actual cost is what was generated ($cost cents)");

run("curl -sf '$final_url' -o $dir/final.mp4");
my $pr = probe("$dir/final.mp4");
my $v = stream($pr, 'video');
my $a = stream($pr, 'audio');
ok(abs($pr->{decoded}{video_end} - 25.0) <= 1 / 24,
	"the video lasts the four clips plus the transition, 25 s ($pr->{decoded}{video_end})");
ok(abs($duration - $pr->{decoded}{video_end}) < 0.01, "the project records the duration read from the file ($duration)");
ok($a && abs($a->{duration} - $v->{duration}) <= 1 / 24, 'audio and video end within one frame');
is($pr->{faststart}, JSON::PP::true, 'the index is at the front of the file');
my $mode = $node->safe_psql('postgres', qq{
	SELECT state -> 'result' ->> 'mode' FROM hagen.job WHERE project_id = '$p' AND kind = 'compile'});
is($mode, 'copy_video', 'same-parameter clips take the stream-copy path');
my $labels = $node->safe_psql('postgres', qq{
	SELECT string_agg(s ->> 'kind', ',' ORDER BY n) FROM hagen.job j,
		jsonb_array_elements(j.state -> 'result' -> 'segments') WITH ORDINALITY AS e(s, n)
	WHERE j.project_id = '$p' AND j.kind = 'compile'});
is($labels, 'clip,clip,transition,clip,clip', 'the transition sits between the second and third clips');

# The music (8 s) loops under the whole 25 s video: sound in the last
# seconds before the fade, where the silent transition has none of its own.
my $late = `ffmpeg -hide_banner -ss 21 -t 1.5 -i $dir/final.mp4 -af volumedetect -f null - 2>&1`;
my ($late_db) = $late =~ /mean_volume: (-?[\d.]+) dB/;
ok(defined $late_db && $late_db > -40, "music is still audible near the end ($late_db dB)");

run("curl -sf '$thumb_url' -o $dir/thumb.jpg");
my $tp = probe("$dir/thumb.jpg");
ok(($tp->{streams}[0]{codec} // '') eq 'mjpeg' && $tp->{streams}[0]{width} == $v->{width},
	'the thumbnail is a JPEG frame of the video\'s size');
ok($node->poll_query_until('postgres', qq{SELECT status = 'succeeded' FROM hagen.job
		WHERE kind = 'cleanup' AND state ->> 'dir' = '$p'}) && !-e "$dir/work/$p",
	'the project\'s work directory is cleaned up');

# 2. Bad media.  Projects whose clips are already in the bucket: a good
# clip, then one that is broken in a different way each time.
run("ffmpeg -loglevel error -y -f lavfi -i 'testsrc2=s=320x180:r=24:d=2' -f lavfi -i 'sine=f=440:d=2'"
	  . " -c:v libx264 -pix_fmt yuv420p -c:a aac -shortest $dir/good.mp4");
my $good = slurp_file("$dir/good.mp4");
my %bad = (
	'not a video' => "this is not a video\n",
	'truncated'   => substr($good, 0, int(length($good) / 2)),
	'empty'       => '',
	'good'        => $good);

sub prepared_project
{
	my ($ws, $second) = @_;
	my $q = $node->safe_psql('postgres', "SELECT hagen.create_project('$ws')");
	my @clips;
	for my $i (0 .. 1)
	{
		my $c = $node->safe_psql('postgres', qq{SELECT hagen.add_clip('$q', 'https://example.com/$i.jpg',
			room_label => '@{[ $i ? "Broken ($ws)" : 'Porch' ]}')});
		my $key = $node->safe_psql('postgres', "SELECT hagen.get_video_path('$ws', '$q', '$c.mp4')");
		open(my $fh, '>', "$dir/upload.mp4") or die;
		binmode $fh;
		print $fh ($i ? $second : $good);
		close $fh;
		put_object($s3, $key, "$dir/upload.mp4");
		push @clips, $c;
	}
	# As if generation had just finished: the compile is what is left.
	$node->safe_psql('postgres', qq{
		UPDATE hagen.video_clip SET status = 'completed' WHERE project_id = '$q';
		UPDATE hagen.video_project SET status = 'generating', started_at = now() WHERE id = '$q';
		SELECT hagen._advance_project('$q');});
	return $q;
}

my %projects = map { $_ => prepared_project('ws-' . ($_ =~ s/ /-/gr), $bad{$_}) } keys %bad;
for my $case (sort keys %bad)
{
	my $r = wait_done($projects{$case});
	if ($case eq 'good')
	{
		is($r, 'completed|', 'a project compiled beside the broken ones completes');
		next;
	}
	like($r, qr/^failed\|.*compile failed: segment 2 \(Broken \(ws-[a-z-]+\)\) .*(cannot be read|truncated|damaged)/,
		"a $case clip fails its project with a message naming the segment");
	note($r);
	is($node->safe_psql('postgres', qq{SELECT attempts FROM hagen.job
		WHERE project_id = '$projects{$case}' AND kind = 'compile'}), '2', "($case: retried once)");
}
# 3. A project with a crossfade: three 2 s clips cross-fade over 0.5 s at
# each cut, so the video is 5 s; the helper re-encodes to blend them.
my $xf = $node->safe_psql('postgres', "SELECT hagen.create_project('ws-xfade', crossfade => 0.5)");
for my $i (0 .. 2)
{
	my $c = $node->safe_psql('postgres', "SELECT hagen.add_clip('$xf', 'https://example.com/$i.jpg')");
	my $key = $node->safe_psql('postgres', "SELECT hagen.get_video_path('ws-xfade', '$xf', '$c.mp4')");
	put_object($s3, $key, "$dir/good.mp4");
}
$node->safe_psql('postgres', qq{
	UPDATE hagen.video_clip SET status = 'completed' WHERE project_id = '$xf';
	UPDATE hagen.video_project SET status = 'generating', started_at = now() WHERE id = '$xf';
	SELECT hagen._advance_project('$xf');});
is(wait_done($xf), 'completed|', 'a project with a crossfade completes');
my ($xf_mode, $xf_fades, $xf_duration, $xf_url) = split /\|/, $node->safe_psql('postgres', qq{
	SELECT j.state -> 'result' ->> 'mode',
		   (SELECT string_agg(to_char((s ->> 'crossfade')::numeric, 'FM0.000'), ',' ORDER BY n)
			FROM jsonb_array_elements(j.state -> 'result' -> 'segments') WITH ORDINALITY AS e(s, n)),
		   p.duration, p.final_video_url
	FROM hagen.job j JOIN hagen.video_project p ON p.id = j.project_id
	WHERE j.project_id = '$xf' AND j.kind = 'compile'});
is($xf_mode, 'normalize', 'the crossfaded clips are re-encoded');
is($xf_fades, '0.000,0.500,0.500', 'every cut after the first clip fades over 0.5 s');
run("curl -sf '$xf_url' -o $dir/xfade.mp4");
my $xp = probe("$dir/xfade.mp4");
ok(abs($xp->{decoded}{video_end} - 5.0) <= 1 / 24 && abs($xf_duration - 5.0) <= 1 / 24,
	"the video is 3 x 2 s less two fades of 0.5 s: $xp->{decoded}{video_end} s (recorded $xf_duration)");
ok(abs($xp->{decoded}{audio_end} - $xp->{decoded}{video_end}) <= 1 / 24, 'its audio ends with its video');

is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $postmaster,
	'the server never restarted');
ok($node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM pg_stat_activity
	WHERE backend_type IN ('hagenkit dispatcher', 'hagenkit compile worker')}),
	'the dispatcher and the compile worker are still running');

$node->stop;
stop_servers();
done_testing();
