# A re-encode split into chunks, end to end, with the real helper, two
# compile workers and the S3 server: a crossfade project of six clips is
# planned, split into three chunks that the workers encode at once, each
# stored in the bucket, and joined; the video has the frames, timestamps,
# blends and audio (bit for bit) of the same project compiled in one run,
# flash and beep together across every chunk boundary, and the chunks are
# deleted from the bucket afterwards.  A chunk whose helper is SIGKILLed is
# encoded again and the video is the same; a clip cut short fails the plan;
# a chunk failing for good fails the project naming the chunk and segment; a
# cancel stops the chunks; with hagen.compile_workers = 0 two remote
# workers do it all through the bucket, one of them SIGKILLed mid-chunk.
# No work files or chunk objects are left whatever the ending.
use strict;
use warnings;

use FindBin;
use JSON::PP;
use POSIX ();
use lib "$FindBin::Bin/../lib";
use HagenTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

need_servers();
need_ffmpeg();

my $dir = $HagenTest::dir;
my $requests = "$dir/s3-requests.log";
my $s3 = s3_server(key => 'chunks-key', secret => 'chunks-secret', args => "--request-log $requests");

# The real helper, behind a stand-in that notes every run, and that fails
# the chunk holding "Room 4" as a damaged clip would while $dir/fail-room-4
# exists.
my $runs = "$dir/helper-runs.txt";
open my $wh, '>', "$dir/hagen-compile" or die;
print $wh <<SH;
#!/bin/sh
echo "\$*" >> $runs
if [ -e $dir/fail-room-4 ] && grep -q '"task": "chunk"' "\$2" && grep -q '"Room 4"' "\$2"; then
	echo '{"error":{"message":"segment 4 (Room 4) is damaged: a packet at 1.25 s is corrupt","segment":4}}'
	exit 1
fi
exec @{[ helper_path() ]} "\$@"
SH
close $wh;
chmod 0755, "$dir/hagen-compile";

# Six 2.5 s clips (640x360, 24 fps), each with a white flash on frame 12 and
# a 1 kHz beep at 0.5 s, otherwise a test pattern of its own hue and silence.
my @clips;
for my $i (1 .. 6)
{
	my $beep = "if(between(t\\,0.5\\,0.6)\\,0.5*sin(2*PI*1000*t)\\,0)";
	run("ffmpeg -loglevel error -y -f lavfi -i 'testsrc2=s=640x360:r=24:d=2.5,hue=h=" . ($i * 37)
		  . ",drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable=eq(n\\,12)'"
		  . " -f lavfi -i \"aevalsrc='$beep|$beep':s=48000:d=2.5\" -c:v libx264 -preset faster -pix_fmt yuv420p"
		  . " -c:a aac -ar 48000 -ac 2 -shortest $dir/clip$i.mp4");
	push @clips, "$dir/clip$i.mp4";
}
run("head -c 20000 $dir/clip4.mp4 > $dir/broken.mp4");
my $music_url = put_music($s3, 'music/low.mp3', 20, 220);

# Two compile workers, chunks of at least 5 s of clips (two clips), one
# thread per helper.
my $node = pipeline_node('chunks', s3 => $s3, s3_key => 'chunks-key', s3_secret => 'chunks-secret',
	settings => [ 'hagen.compile_workers' => 2, 'hagen.compile_helper' => "$dir/hagen-compile",
		'hagen.compile_chunk_length' => '5s', 'hagen.compile_threads' => 1, 'hagen.fal_key' => 'unused:key' ]);
my $music = $node->safe_psql('postgres', "SELECT hagen.add_music_track('Low hum', '$music_url')");

sub sql { return $node->safe_psql('postgres', $_[0]); }

# A project whose clips are generated and stored in the bucket (clip files
# given in order), with 0.5 s crossfades and the music at 0.05: its compile
# is what is left.
sub prepared_project
{
	my ($ws, @files) = @_;
	my $p = sql(qq{SELECT hagen.create_project('$ws', music_track_id => '$music', music_volume => 0.05,
		crossfade => 0.5)});
	my $i = 0;
	for my $f (@files)
	{
		$i++;
		my $c = sql(qq{SELECT hagen.add_clip('$p', 'https://example.com/$i.jpg', room_label => 'Room $i')});
		put_object($s3, sql("SELECT hagen.get_video_path('$ws', '$p', '$c.mp4')"), $f, 'video/mp4');
	}
	sql(qq{UPDATE hagen.video_clip SET status = 'completed' WHERE project_id = '$p';
		UPDATE hagen.video_project SET status = 'generating', started_at = now() WHERE id = '$p';
		SELECT hagen._advance_project('$p');});
	return $p;
}

sub helper_runs
{
	my ($p, $what) = @_;
	return 0 unless -e $runs;
	return scalar(grep { m{\b$p/\Q$what\E} } split /\n/, slurp_file($runs));
}

sub cleaned
{
	my ($p) = @_;
	return $node->poll_query_until('postgres', qq{SELECT count(*) = 1 FROM hagen.job
		WHERE kind = 'cleanup' AND state ->> 'dir' = '$p' AND status = 'succeeded'}) && !-e "$dir/work/$p";
}

# The chunks' objects: their purge ran, and the bucket lists nothing under
# their prefix.
sub chunks_deleted
{
	my ($p) = @_;
	my $ok = $node->poll_query_until('postgres', qq{SELECT count(*) >= 1 AND bool_and(status = 'succeeded')
		FROM hagen.job WHERE kind = 'purge' AND state ->> 'project_id' = '$p' AND state ->> 'prefix' LIKE '%/chunks/%'});
	my $prefix = sql(qq{SELECT state ->> 'prefix' FROM hagen.job WHERE kind = 'purge' AND state ->> 'project_id' = '$p'
		AND state ->> 'prefix' LIKE '%/chunks/%' ORDER BY id DESC LIMIT 1});
	my $list = `curl -sf '$s3/videos?list-type=2&prefix=$prefix'`;
	return $ok && $list =~ /ListBucketResult/ && $list !~ /<Key>/;
}

sub download
{
	my ($p, $name) = @_;
	run("curl -sf '" . sql("SELECT final_video_url FROM hagen.video_project WHERE id = '$p'") . "' -o $dir/$name.mp4");
	return "$dir/$name.mp4";
}

# What the ffmpeg CLI measures of a video (test/compile/media.py): every
# frame's time and mean luma, the flashes, the beeps, the audio packets.
open my $mh, '>', "$dir/measure.py" or die;
print $mh <<'PY';
import json, sys
sys.path.insert(0, sys.argv[1])
from media import Pcm, flashes, packet_hashes, video_frames
f = sys.argv[2]
print(json.dumps({'frames': video_frames(f), 'flashes': flashes(f), 'beeps': Pcm(f).onsets(threshold=0.2),
                  'audio': packet_hashes(f, 'a')}))
PY
close $mh;

sub measure
{
	my ($file) = @_;
	my $out = `python3 $dir/measure.py $HagenTest::root/test/compile $file`;
	return eval { decode_json($out) } // {};
}

# 1. Split, encoded by two workers at once, joined.
my $p = prepared_project('ws-split', @clips);
is(wait_project($node, $p, 180), 'completed|', 'a crossfade project of six clips completes');
is(sql(qq{SELECT count(*) FROM hagen.job_log WHERE project_id = '$p' AND message LIKE '%split into 3 chunks'}), '1',
	'its re-encode was split into 3 chunks');
is(sql(qq{SELECT string_agg(format('%s-%s %s', state ->> 'first', state ->> 'last', status), ', '
		ORDER BY (state ->> 'number')::integer) FROM hagen.job WHERE project_id = '$p' AND kind = 'chunk'}),
	'1-2 succeeded, 3-4 succeeded, 5-6 succeeded', 'of segments 1-2, 3-4 and 5-6, each encoded');
is(join(' ', map { helper_runs($p, $_) } ('compile_', 'chunk_')), '2 3',
	'the helper ran 5 times: a plan, three chunks, a join');
ok(sql(qq{SELECT count(*) FROM hagen.job a JOIN hagen.job b ON b.parent_id = a.parent_id AND b.id > a.id
		WHERE a.project_id = '$p' AND a.kind = 'chunk' AND b.kind = 'chunk'
		  AND a.started_at < (SELECT min(logged_at) FROM hagen.job_log WHERE job_id = b.id AND message LIKE '%encoded%')
		  AND b.started_at < (SELECT min(logged_at) FROM hagen.job_log WHERE job_id = a.id AND message LIKE '%encoded%')})
	  >= 1, 'two chunks were encoded at the same time, by the two compile workers');
my @keys = split /\n/, sql(qq{SELECT state ->> 'key' FROM hagen.job WHERE project_id = '$p' AND kind = 'chunk' ORDER BY id});
my $log = slurp_file($requests);
is(scalar(grep { $log =~ m{^PUT /videos/\Q$_\E 200 }m } @keys), 3, 'each chunk was stored in the bucket at its key');
ok(chunks_deleted($p), 'and deleted from it once the video was stored');
my $split = download($p, 'split');
my $pr = probe_media($split);
ok(abs(($pr->{decoded}{video_end} // 0) - 12.5) < 0.001 && ($pr->{decoded}{video_frames} // 0) == 300,
	'the video is 12.5 s (6 x 2.5 s less 5 fades of 0.5 s) and 300 frames');
ok(abs(($pr->{decoded}{audio_end} // 0) - 12.5) < 0.021, 'its audio ends with its video')
  or diag(explain($pr->{decoded}));
my $ms = measure($split);
my @want = map { 0.5 + 2 * $_ } 0 .. 5;
ok(@{ $ms->{flashes} // [] } == 6 && !grep({ abs($ms->{flashes}[$_] - $want[$_]) > 1 / 48 } 0 .. 5),
	'a flash at 0.5, 2.5, ... 10.5 s') or diag(explain($ms->{flashes}));
ok(@{ $ms->{beeps} // [] } == 6 && !grep({ abs($ms->{beeps}[$_] - $ms->{flashes}[$_]) >= 1 / 24 } 0 .. 5),
	'with its beep within a frame: in sync across every chunk boundary') or diag(explain($ms->{beeps}));
ok(cleaned($p), 'the completed project leaves nothing in the work directory');

# 2. The same clips compiled in one run: the same frames, timestamps,
# blends and audio.
reconfigure($node, 'hagen.compile_chunk_length' => '0');
my $one = prepared_project('ws-one', @clips);
is(wait_project($node, $one, 180), 'completed|', 'the same project compiled in one run completes');
is(sql(qq{SELECT count(*) FROM hagen.job WHERE project_id = '$one' AND kind = 'chunk'}) . ' ' . helper_runs($one, 'compile_'),
	'0 1', '(one run of the helper, no chunk)');
my $mo = measure(download($one, 'one'));
my @fs = @{ $ms->{frames} // [] };
my @fo = @{ $mo->{frames} // [] };
is(scalar(@fs), scalar(@fo), 'the split video has as many frames as the one-run video (' . scalar(@fo) . ')');
is(scalar(grep { abs($fs[$_][0] - $fo[$_][0]) > 1e-6 } 0 .. $#fo), 0, 'each at the same time');
my @dy = map { abs($fs[$_][1] - $fo[$_][1]) } 0 .. $#fo;
ok(@fo && !grep({ $_ >= 2.5 } @dy), 'and of the same mean luma, the blended frames included (within 2.5)')
  or diag(explain([ grep { $dy[$_] >= 2.5 } 0 .. $#dy ]));
ok(@{ $ms->{audio} // [] } && encode_json($ms->{audio}) eq encode_json($mo->{audio}),
	'the audio is bit for bit the one-run video\'s (every AAC packet)');
is(sql(qq{SELECT jsonb_path_query_array(state, '\$.result.segments[*].start')::text FROM hagen.job
		WHERE project_id = '$p' AND kind = 'compile'}),
	sql(qq{SELECT jsonb_path_query_array(state, '\$.result.segments[*].start')::text FROM hagen.job
		WHERE project_id = '$one' AND kind = 'compile'}), 'the results give the same start to every segment');
reconfigure($node, 'hagen.compile_chunk_length' => '5s');

# 3. A chunk's helper SIGKILLed: that chunk is encoded again, the video is
# the same.
$p = prepared_project('ws-kill', @clips);
my $pid = '';
for (1 .. 600)
{
	$pid = `pgrep -f '[h]agen-compile compile $p/chunk_'`;
	last if $pid;
	select(undef, undef, undef, 0.05);
}
($pid) = split /\n/, $pid;
ok($pid, 'a chunk is being encoded');
kill 'KILL', $pid if $pid;
is(wait_project($node, $p, 180), 'completed|', 'the project completes after its helper was killed');
like(sql(qq{SELECT string_agg(message, ' / ') FROM hagen.job_log l JOIN hagen.job j ON j.id = l.job_id
		WHERE j.project_id = '$p' AND j.kind = 'chunk' AND l.level = 'warning'}),
	qr/step encode failed \(attempt 1\), retrying .*hagen-compile crashed \(signal 9/, 'the killed chunk was retried');
is(sql(qq{SELECT count(*) FROM hagen.job_log l JOIN hagen.job j ON j.id = l.job_id
		WHERE j.project_id = '$p' AND j.kind = 'chunk' AND l.message LIKE 'step encode failed%'}), '1', 'once');
my $mk = measure(download($p, 'killed'));
ok(@{ $mk->{frames} // [] } == @fo && encode_json($mk->{audio}) eq encode_json($mo->{audio}),
	'the video has the same frames and the same audio');
ok(chunks_deleted($p) && cleaned($p), 'no chunk object or work file is left');

# 4. A clip cut short: the plan finds it, before any chunk is encoded.
$p = prepared_project('ws-cut', @clips[0 .. 2], "$dir/broken.mp4", @clips[4 .. 5]);
my $r = wait_project($node, $p, 180);
like($r, qr/^failed\|gave up on step plan after 2 attempts: compile failed: segment 4 \(Room 4\) cannot be read/,
	'a clip cut short fails the project at its plan, naming the segment');
is(sql(qq{SELECT count(*) FROM hagen.job WHERE project_id = '$p' AND kind = 'chunk'}), '0', 'no chunk was queued');
ok(cleaned($p), 'no work file is left');

# 5. A chunk that fails for good (twice): the project fails naming the
# chunk and the segment, the other chunks stop.
run("touch $dir/fail-room-4");
$p = prepared_project('ws-broken', @clips);
$r = wait_project($node, $p, 180);
like($r, qr/^failed\|chunk 2 of 3 \(segments 3 to 4\) failed: gave up on step encode after 2 attempts: encoding failed: segment 4 \(Room 4\) is damaged/,
	'a chunk that fails twice fails the project, naming the chunk and its segment');
note($r);
unlink "$dir/fail-room-4";
ok($node->poll_query_until('postgres', qq{SELECT count(*) = 0 FROM hagen.job
	WHERE project_id = '$p' AND status IN ('queued', 'running')}), 'the other chunks stop');
is(sql(qq{SELECT string_agg(status, ' ' ORDER BY (state ->> 'number')::integer) FROM hagen.job
	WHERE project_id = '$p' AND kind = 'chunk'}) =~ /^\S+ failed \S+$/ ? 'failed' : 'no', 'failed',
	'(chunk 2 failed; the others were canceled or had finished)');
ok(chunks_deleted($p) && cleaned($p), 'no chunk object or work file is left');

# 6. Canceled while its chunks encode.
$p = prepared_project('ws-cancel', @clips);
ok($node->poll_query_until('postgres', qq{SELECT EXISTS (SELECT 1 FROM hagen.job
	WHERE project_id = '$p' AND kind = 'chunk' AND status = 'running')}), 'chunks are being encoded');
sql("SELECT hagen.cancel_video('$p')");
ok($node->poll_query_until('postgres', qq{SELECT count(*) = 0 FROM hagen.job
	WHERE project_id = '$p' AND status IN ('queued', 'running')}), 'canceling the project stops every chunk');
is(`pgrep -f '[h]agen-compile compile $p/'`, '', 'no helper of it runs');
ok(chunks_deleted($p) && cleaned($p), 'no chunk object or work file is left');

# 7. Every compile on other hosts (hagen.compile_workers = 0): two
# `hagen-compile worker` processes take the plan, the chunks and the join
# through the bucket; the database host fetches nothing.  One of them is
# SIGKILLed in the middle of a chunk: the other takes the chunk up once its
# lease runs out, and the video is the same.
$node->append_conf('postgresql.conf', "hagen.compile_workers = 0\nhagen.worker_lease = '6s'\n");
$node->restart;
sql(q{CREATE ROLE rw1 LOGIN IN ROLE hagen_worker; CREATE ROLE rw2 LOGIN IN ROLE hagen_worker});
my %workers;
END { kill 'KILL', values %workers if %workers; }
sub start_worker
{
	my ($name, $user) = @_;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open STDOUT, '>>', "$dir/worker-$name.log" or POSIX::_exit(126);
		open STDERR, '>>', "$dir/worker-$name.log" or POSIX::_exit(126);
		{ exec(helper_path(), 'worker', '--dsn', 'host=' . $node->host . ' port=' . $node->port
				. " dbname=postgres user=$user", '--name', $name, '--work-dir', "$dir/wk-$name"); }
		POSIX::_exit(127);
	}
	$workers{$name} = $pid;
	return $pid;
}
start_worker('wa', 'rw1');
start_worker('wb', 'rw2');
my $runs_before = -e $runs ? scalar(split /\n/, slurp_file($runs)) : 0;
$p = prepared_project('ws-remote', @clips);
is(wait_project($node, $p, 180), 'completed|', 'a split project compiles on two remote workers');
is(sql(qq{SELECT count(*) FROM hagen.job_log l JOIN hagen.job j ON j.id = l.job_id
		WHERE j.project_id = '$p' AND j.kind = 'compile' AND l.message ~ '^claimed by remote worker w[ab]\$'}), '2',
	'its plan and its join were claimed by the remote workers');
is(sql(qq{SELECT count(*) FILTER (WHERE EXISTS (SELECT 1 FROM hagen.job_log l WHERE l.job_id = j.id
		AND l.message ~ '^claimed by remote worker w[ab]\$')) || ' of ' || count(*)
		FROM hagen.job j WHERE j.project_id = '$p' AND j.kind = 'chunk'}), '3 of 3', 'and so was every chunk');
is(sql(qq{SELECT count(DISTINCT substring(l.message from 'w[ab]\$')) FROM hagen.job_log l JOIN hagen.job j ON j.id = l.job_id
		WHERE j.project_id = '$p' AND j.kind = 'chunk' AND l.message ~ '^claimed by remote worker'}), '2', 'both took chunks');
is(sql(qq{SELECT count(*) FROM hagen.job WHERE project_id = '$p' AND kind = 'fetch'}), '1',
	'the database host fetched only the music (not the clips, not the chunks)');
is(-e $runs ? scalar(split /\n/, slurp_file($runs)) - $runs_before : 0, 0, 'and ran no helper');
my $mr = measure(download($p, 'remote'));
ok(@{ $mr->{frames} // [] } == @fo && !grep({ abs($mr->{frames}[$_][0] - $fo[$_][0]) > 1e-6 } 0 .. $#fo)
	  && encode_json($mr->{audio}) eq encode_json($mo->{audio}),
	'its video has the frames, frame times and audio of the one-run video');
ok(chunks_deleted($p), 'its chunks were deleted from the bucket');

$p = prepared_project('ws-remote-kill', @clips);
my ($victim, $chunk) = ('', '');
for (1 .. 600)
{
	($chunk, $victim) = split /\|/, sql(qq{SELECT l.job_id || '|' || l.worker FROM hagen.remote_lease l
		JOIN hagen.job j ON j.id = l.job_id AND j.lease_token = l.token AND j.status = 'running'
		WHERE j.project_id = '$p' AND j.kind = 'chunk' ORDER BY l.claimed_at LIMIT 1});
	last if $victim && `pgrep -f '[h]agen-compile compile .*/manifest.json'`;
	select(undef, undef, undef, 0.05);
}
ok($victim, "remote worker $victim encodes a chunk");
kill 'KILL', $workers{$victim} if $victim;
waitpid($workers{$victim}, 0) if $victim;
delete $workers{$victim};
is(wait_project($node, $p, 180), 'completed|', 'the project completes after the worker was SIGKILLed mid-chunk');
like(sql("SELECT string_agg(message, ' / ' ORDER BY id) FROM hagen.job_log WHERE job_id = " . ($chunk || 0)),
	qr/claimed by remote worker $victim.*lease expired; job taken up again.*claimed by remote worker w[ab]/,
	'its chunk was taken up again once its lease ran out');
my $mrk = measure(download($p, 'remote-killed'));
ok(@{ $mrk->{frames} // [] } == @fo && encode_json($mrk->{audio}) eq encode_json($mo->{audio}),
	'and the video has the same frames and audio');
ok(chunks_deleted($p), 'no chunk object is left');
kill 'TERM', values %workers;
waitpid($_, 0) for values %workers;
%workers = ();

$node->stop;
done_testing();
