# The compile worker's supervision of hagen-compile, with a stand-in helper
# that can crash, hang, fail or report progress: the server stays up, the
# helper runs under limits with a clean environment, progress reaches the
# project, and every failure becomes a clear message.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../lib";
use HagenTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $dir = $HagenTest::dir;
my $mode = "$dir/mode";
my $helper = "$dir/fake-hagen-compile";
open my $fh, '>', $helper or die;
print $fh <<"SH";
#!/bin/sh
# Stand-in for hagen-compile: behaves as $mode says.
env > $dir/env.txt
pwd > $dir/pwd.txt
cp "\$2" $dir/manifest-seen.json
ulimit -t > $dir/cpu.txt
ulimit -v > $dir/as.txt
echo "\$@" > $dir/args.txt
echo "\$@" >> $dir/runs.txt
case "\$(cat $mode)" in
crash)	echo '{"progress":0.1,"segment":1}'; echo 'not json {'; echo '{"progress":0.3,"segment":2}'; kill -SEGV \$\$ ;;
hang)	sleep 600 ;;
error)	echo '{"error":{"message":"segment 1 (Kitchen) is not a video file","segment":1,"path":"x"}}'; exit 1 ;;
quiet)	exit 3 ;;
progress)
	for i in 1 2 3 4 5 6; do echo "{\\"progress\\":0.\$i,\\"stage\\":\\"mix\\"}"; sleep 1; done
	out=\$(sed -E 's/.*"output": "([^"]+)".*/\\1/' "\$2")
	thumb=\$(sed -E 's/.*"thumbnail": "([^"]+)".*/\\1/' "\$2")
	echo video > "\$out"; echo jpeg > "\$thumb"
	echo '{"result":{"duration":15.0,"size":6,"thumbnail_size":5,"mode":"copy_all","streams":[]}}' ;;
esac
SH
close $fh;
chmod 0755, $helper;

my $node = hagen_node('compile', fal => 'http://127.0.0.1:1', fal_key => 'test-id:test-secret',
	s3 => 'http://127.0.0.1:1', s3_key => 'AKID', s3_secret => 'secret',
	settings => [ 'hagen.compile_helper' => $helper, 'hagen.compile_timeout' => '10s',
		'hagen.work_dir' => "$dir/work" ]);

# A project whose three clips are generated (their files in the work
# directory), so that starting it goes straight to the compile.
sub compile_project
{
	my ($how) = @_;
	open my $m, '>', $mode or die; print $m $how; close $m;
	my $p = $node->safe_psql('postgres', q{SELECT hagen.create_project('ws')});
	$node->safe_psql('postgres', qq{
		SELECT hagen.add_clip('$p', 'https://img.example.com/' || i || '.jpg', room_label => 'Room ' || i)
		FROM generate_series(1, 3) i});
	for my $c (split /\n/, $node->safe_psql('postgres',
			"SELECT id FROM hagen.video_clip WHERE project_id = '$p'"))
	{
		mkdir "$dir/work"; mkdir "$dir/work/$p";
		open my $v, '>', "$dir/work/$p/$c.mp4" or die; print $v "clip"; close $v;
	}
	$node->safe_psql('postgres', qq{
		UPDATE hagen.video_clip SET status = 'completed' WHERE project_id = '$p';
		SELECT hagen.start_video('$p');});
	return $p;
}

sub wait_done
{
	my ($p) = @_;
	$node->poll_query_until('postgres',
		"SELECT status IN ('completed', 'failed', 'canceled') FROM hagen.video_project WHERE id = '$p'")
	  or die "project $p did not finish";
	return $node->safe_psql('postgres',
		"SELECT status || '|' || coalesce(error_message, '') FROM hagen.video_project WHERE id = '$p'");
}

my $p = compile_project('crash');
like(wait_done($p), qr/^failed\|gave up on step compile after 2 attempts: compile failed: hagen-compile crashed \(signal 11: Segmentation fault\) while on segment 2 \(Room 2\); see /,
	'a helper that crashes fails the compile with a clear message naming the segment it was on');
is(scalar(grep { /^compile $p\// } split /\n/, slurp_file("$dir/runs.txt")), 2,
	'after one retry: the helper ran twice');
is($node->safe_psql('postgres', 'SELECT 1'), '1', 'and the server stayed up');
ok(!grep({ /terminated by signal|server process .* was terminated/ } slurp_file($node->logfile)),
	'no server process died');

is(slurp_file("$dir/cpu.txt"), "10\n", 'the helper runs with a CPU-time limit (hagen.compile_timeout)');
is(slurp_file("$dir/as.txt"), "4194304\n", 'and a 4 GB address-space limit');
my @env = sort map { (split /=/)[0] } split /\n/, slurp_file("$dir/env.txt");
is_deeply([ grep { !/^(PWD|SHLVL|_)$/ } @env ], [ 'LANG', 'PATH' ], 'and a clean environment');
is(slurp_file("$dir/pwd.txt"), "$dir/work\n", 'in the work directory');
my $cj = $node->safe_psql('postgres', "SELECT id FROM hagen.job WHERE project_id = '$p' AND kind = 'compile'");
my ($attempt) = slurp_file("$dir/args.txt") =~ m{^compile $p/compile_${cj}_(\d+)/manifest\.json$};
ok($attempt, 'it is given the manifest of its attempt, in a directory of that attempt');
my $manifest = slurp_file("$dir/manifest-seen.json");
my $effect_manifest = $node->safe_psql('postgres',
	"SELECT state -> 'manifest' FROM hagen.job WHERE id = $cj");
like($manifest, qr{"segments": \[\{"file": "$p/[0-9a-f-]+\.mp4", "kind": "clip", "label": "Room 1", "crossfade": 0\}},
	'the manifest lists the local clip files in order, relative to the work directory');
like($manifest, qr{"output": "$p/compile_${cj}_${attempt}/final\.mp4"}, 'and writes into its attempt\'s directory');
is($node->safe_psql('postgres', "SELECT '$manifest'::jsonb - 'output' - 'thumbnail' = '$effect_manifest'::jsonb"),
	't', 'the manifest is exactly what SQL planned');
ok($node->poll_query_until('postgres', qq{SELECT status = 'succeeded' FROM hagen.job
		WHERE kind = 'cleanup' AND state ->> 'dir' = '$p'}), 'a cleanup job ran for the failed project');
ok(!-d "$dir/work/$p", 'and its work files are removed');

$p = compile_project('error');
like(wait_done($p), qr/^failed\|.*compile failed: segment 1 \(Kitchen\) is not a video file$/,
	"a helper error names the segment, once");

$p = compile_project('quiet');
like(wait_done($p), qr/hagen-compile exited with status 3 without a result/, 'an exit without a result is reported');

$p = compile_project('hang');
like(wait_done($p), qr/took longer than hagen\.compile_timeout \(10 s\)/, 'a helper that hangs is killed at the time limit');
my $left = `pgrep -f fake-hagen-compile`;
is($left, '', 'and nothing of it is left running');

$p = compile_project('progress');
ok($node->poll_query_until('postgres',
		"SELECT (progress->>'percent')::numeric > 86 FROM hagen.video_project WHERE id = '$p'"),
	'the helper\'s progress reaches the project while it runs');
# The store step follows on the http lane; this cluster's storage answers
# nothing, so it retries there, and FFmpeg never runs again.
ok($node->poll_query_until('postgres', qq{
		SELECT step = 'store' AND lane = 'http' AND attempts >= 1 FROM hagen.job
		WHERE project_id = '$p' AND kind = 'compile'}),
	'the result then goes to the store step on the http lane (this cluster\'s storage does not answer)');
is(scalar(grep { /^compile $p\// } split /\n/, slurp_file("$dir/runs.txt")), 1,
	'the helper ran once');
like($node->safe_psql('postgres', "SELECT last_error FROM hagen.job WHERE project_id = '$p' AND kind = 'compile'"),
	qr/upload of .*thumbnail\.jpg to storage/, 'and the failing upload is retried as an upload');
$node->safe_psql('postgres', "SELECT hagen.cancel_video('$p')");

$node->stop;
done_testing();
