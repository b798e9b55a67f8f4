# Photo framing with no compile worker in the server (hagen.compile_workers
# = 0): a 9:16 project of landscape photos is generated on the Fal.ai
# simulator while a `hagen-compile worker` on "another host" fits every
# photo and compiles the video, all through the bucket; hagen-compile never
# runs on the database host, and the clips and the video are full-frame
# vertical.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../lib";
use HagenTest;
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

need_servers();
need_ffmpeg();

my $dir = $HagenTest::dir;
my $requests = "$dir/s3-requests.log";
my $s3 = s3_server(key => 'frame-key', secret => 'frame-secret', args => "--request-log $requests");
my $fal = fal_sim();

# The database host's helper, a stand-in that notes any run: there must be none.
my $host_runs = "$dir/host-helper-runs.txt";
open my $wh, '>', "$dir/host-helper" or die;
print $wh "#!/bin/sh\necho \"\$*\" >> $host_runs\nexit 1\n";
close $wh;
chmod 0755, "$dir/host-helper";

my $node = pipeline_node('framing', fal => $fal, s3 => $s3, s3_key => 'frame-key', s3_secret => 'frame-secret',
	settings => [ 'hagen.compile_workers' => 0, 'hagen.compile_helper' => "$dir/host-helper" ]);
sub sql { return $node->safe_psql('postgres', $_[0]); }
sql('CREATE ROLE far_worker LOGIN IN ROLE hagen_worker');

my $pid = fork();
die "fork: $!" unless defined $pid;
if ($pid == 0)
{
	open STDOUT, '>>', "$dir/worker.log" or POSIX::_exit(126);
	open STDERR, '>>', "$dir/worker.log" or POSIX::_exit(126);
	{ exec(helper_path(), 'worker', '--dsn', 'host=' . $node->host . ' port=' . $node->port
		  . ' dbname=postgres user=far_worker', '--name', 'far-away', '--work-dir', "$dir/far"); }
	POSIX::_exit(127);
}
END { kill 'KILL', $pid if $pid; }

# Two landscape photos (640x360) for a vertical project, with a seamless
# transition between them.
my @photos = put_photos($s3, 2);
my $p = sql(q{SELECT hagen.create_project('ws-vertical', '9:16')});
sql("SELECT hagen.add_clip('$p', '$photos[0]', room_type => 'living-room', transition_type => 'seamless')");
sql("SELECT hagen.add_clip('$p', '$photos[1]', room_type => 'kitchen')");
sql("SELECT hagen.start_video('$p')");
is(wait_project($node, $p, 240), 'completed|', 'a 9:16 project of landscape photos completes with only a remote worker');

is(sql(qq{SELECT count(*) FROM hagen.job_log l JOIN hagen.job j ON j.id = l.job_id
	WHERE j.project_id = '$p' AND l.message ~ '^image .* fitted to 9:16 \\(crop\\): [0-9]+x[0-9]+ from 640x360'}),
	'4', 'each photo of the two clips and the transition was fitted to 9:16 (four fits)');
my $steps = sql(qq{SELECT string_agg(DISTINCT regexp_replace(l.message, '^step (\\w+) done; next: (\\w+)\$', '\\1>\\2'), ' ')
	FROM hagen.job_log l JOIN hagen.job j ON j.id = l.job_id
	WHERE j.project_id = '$p' AND j.kind = 'clip' AND l.message ~ '^step image_'});
like($steps, qr/image_fetch>image_source.*image_frame>image_pull.*image_pull>image_initiate/,
	"the photos went through the bucket: fetched, stored, fitted there, fetched back for Fal storage ($steps)");
my @source = grep { m{^PUT /videos/ws-vertical/videos/$p/image_\d+_\d+_source } } split /\n/, slurp_file($requests);
my @fitted = grep { m{^PUT /videos/ws-vertical/videos/$p/image_\d+_\d+\.jpg\?X-Amz-} } split /\n/, slurp_file($requests);
is(scalar(@source), 4, 'the photos as fetched were stored for the worker');
is(scalar(@fitted), 4, 'and the worker stored the fitted photos through presigned URLs');

run("curl -sf '" . sql("SELECT clip_url FROM hagen.video_clip WHERE project_id = '$p' ORDER BY sequence_order LIMIT 1")
	  . "' -o $dir/clip.mp4");
my ($v) = grep { $_->{type} eq 'video' } @{ probe_media("$dir/clip.mp4")->{streams} // [] };
ok($v && $v->{height} > $v->{width}, "the generated clips are vertical ($v->{width}x$v->{height})");
run("curl -sf '" . sql("SELECT final_video_url FROM hagen.video_project WHERE id = '$p'") . "' -o $dir/final.mp4");
my ($f) = grep { $_->{type} eq 'video' } @{ probe_media("$dir/final.mp4")->{streams} // [] };
ok($f && $f->{height} > $f->{width}, "and so is the video ($f->{width}x$f->{height})");
# Full frame: no bars at the top of the video (a landscape clip padded into
# a vertical frame would be black there).
my $top = `ffmpeg -hide_banner -i $dir/final.mp4 -vf 'crop=iw:ih/10:0:0,signalstats,metadata=print:key=lavfi.signalstats.YAVG' -frames:v 1 -f null - 2>&1`;
my ($yavg) = $top =~ /YAVG=([\d.]+)/;
ok(defined $yavg && $yavg > 40, "full frame: the top tenth of the video is not a black bar (luma $yavg)");
ok(!-e $host_runs, 'hagen-compile never ran on the database host');
like(sql(q{SELECT jobs_done || ' ' || name FROM hagen.compile_workers}), qr/^[5-9] far-away$|^\d\d far-away$/,
	'the remote worker did the fitting and the compile (' . sql('SELECT jobs_done FROM hagen.compile_workers') . ' jobs)');

kill 'TERM', $pid;
waitpid($pid, 0);
$pid = 0;
$node->stop;
done_testing();
