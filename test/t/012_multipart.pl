# Multipart uploads and prefix deletes against a server that verifies
# SigV4 (@20minutes/s3rver): an 80 MiB clip stored in parts and read back
# intact, also with the AWS CLI as an independent client; the dispatcher
# SIGKILLed in the middle of an upload, which resumes without sending again
# any part whose answer was recorded; a cancel that aborts the upload; and
# deleting a project with more than 1000 objects deletes them all, and
# nothing else.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../lib";
use HagenTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

need_servers();

my $dir = $HagenTest::dir;
my $secret = 'multipart-test-secret';
my $requests = "$dir/requests.log";
# Parts are held 150 ms each, so that the test can act in the middle of an upload.
my $s3 = s3_server(key => 'mp-key', secret => $secret, args => "--request-log $requests --part-delay-ms 150");

my $node = pipeline_node('multipart', s3 => $s3, s3_key => 'mp-key', s3_secret => $secret,
	fal => 'http://127.0.0.1:1', fal_key => 'test-id:test-secret',
	settings => [ 'hagen.compile_workers' => 0, 'hagen.s3_part_size' => '5MB', 'hagen.s3_upload_concurrency' => 4,
		'restart_after_crash' => 'on' ]);

sub sha256_of { my ($cmd) = @_; my ($h) = `$cmd | sha256sum` =~ /^([0-9a-f]{64})/; return $h // 'none'; }
sub psql { return $node->safe_psql('postgres', $_[0]); }

# A started project of one clip whose generated video ($mib MiB of noise)
# is about to be stored: its job goes straight to the storing step.
sub clip_to_store
{
	my ($ws, $mib) = @_;
	my ($p, $c) = split /\|/, psql(qq{
		SELECT p || '|' || c FROM hagen.create_project('$ws') p,
			LATERAL hagen.add_clip(p, 'https://img.example.com/a.jpg') c});
	mkdir "$dir/work"; mkdir "$dir/work/$p";
	system("head -c ${mib}M /dev/urandom > $dir/work/$p/$c.mp4") == 0 or die;
	my $bytes = -s "$dir/work/$p/$c.mp4";
	psql(qq{SELECT hagen.start_video('$p');
		UPDATE hagen.job SET step = hagen._store_step($bytes), run_at = now(),
			state = state || jsonb_build_object('bytes', $bytes) WHERE project_id = '$p';});
	return ($p, $c, "$dir/work/$p/$c.mp4");
}

sub wait_clip
{
	my ($p) = @_;
	$node->poll_query_until('postgres',
		"SELECT status IN ('succeeded', 'failed', 'canceled') FROM hagen.job WHERE project_id = '$p' AND kind = 'clip'")
	  or die 'the clip job never finished';
	return psql(qq{SELECT j.status || '|' || coalesce(j.last_error, '') || '|' || coalesce(c.clip_url, '')
		FROM hagen.job j JOIN hagen.video_clip c ON c.id = j.clip_id WHERE j.project_id = '$p' AND j.kind = 'clip'});
}

# The UploadPart requests the server answered, by part number.
sub part_requests
{
	my %n;
	open my $f, '<', $requests or return %n;
	while (<$f>) { $n{$1}++ if /^PUT \S*partNumber=(\d+)\S* 200 /; }
	return %n;
}

# 1. An 80 MiB clip: a multipart upload of 16 parts of 5 MiB, read back intact.
my ($p, $c, $file) = clip_to_store('ws-multipart', 80);
my ($status, $err, $url) = split /\|/, wait_clip($p);
is($status, 'succeeded', 'an 80 MiB clip is stored with a multipart upload') or diag($err);
is(psql("SELECT count(*) || ' ' || count(*) FILTER (WHERE j.status = 'succeeded') FROM hagen.job j
		JOIN hagen.job u ON u.id = j.parent_id AND u.kind <> 'compile' WHERE u.project_id = '$p'"), '16 16', '  in 16 parts, each stored');
my %parts = part_requests();
is(scalar(keys %parts), 16, '  the server received parts 1 to 16');
is(sha256_of("curl -sf '$url'"), sha256_of("cat $file"), '  the object read back has the sha256 of the file');
my ($ct) = `curl -s -I '$url'` =~ /content-type:\s*(\S+)/i;
is($ct, 'video/mp4', '  with its Content-Type');
my $key = "ws-multipart/videos/$p/$c.mp4";

# 2. The AWS CLI (an independent S3 client) reads it back too.
SKIP:
{
	skip 'awscli is not installed (Debian package awscli)', 2 unless -x '/usr/bin/aws';
	open my $cfg, '>', "$dir/aws.config" or die;
	print $cfg "[default]\nregion = auto\ns3 =\n  addressing_style = path\n";
	close $cfg;
	my $aws = "env -i PATH=/usr/bin:/bin HOME=$dir AWS_CONFIG_FILE=$dir/aws.config AWS_ACCESS_KEY_ID=mp-key "
	  . "AWS_SECRET_ACCESS_KEY=$secret /usr/bin/aws --endpoint-url $s3";
	is(sha256_of("$aws s3 cp 's3://videos/$key' - 2>$dir/aws.err"), sha256_of("cat $file"),
		'aws s3 cp reads the object back with the same sha256') or diag(slurp_file("$dir/aws.err"));
	like(`$aws s3api head-object --bucket videos --key '$key' 2>&1`, qr/"ContentLength": 83886080/,
		'  and aws s3api head-object sees its full length');
}

# 3. The dispatcher killed in the middle of an upload: it resumes, and no
# part whose answer was recorded is sent again.
unlink $requests;
my ($p2, $c2, $file2) = clip_to_store('ws-killed', 100);
$node->poll_query_until('postgres', qq{SELECT count(*) >= 6 FROM hagen.job j JOIN hagen.job u ON u.id = j.parent_id AND u.kind <> 'compile'
	WHERE u.project_id = '$p2' AND j.status = 'succeeded'}) or die 'no part was stored';
my $dpid = psql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'hagenkit dispatcher'");
# What is recorded now was certainly recorded before the kill.
my $before = psql(qq{SELECT string_agg((j.state ->> 'part') || ':' || j.total_attempts, ',' ORDER BY (j.state ->> 'part')::int)
	FROM hagen.job j JOIN hagen.job u ON u.id = j.parent_id AND u.kind <> 'compile' WHERE u.project_id = '$p2' AND j.status = 'succeeded'});
kill 'KILL', $dpid;
my @confirmed = map { (split /:/)[0] } split /,/, $before;
ok(@confirmed >= 6 && @confirmed < 20, "dispatcher killed with " . scalar(@confirmed) . " of 20 parts recorded");
($status, $err, $url) = split /\|/, wait_clip($p2);
is($status, 'succeeded', '  the upload resumed and completed') or diag($err);
is(sha256_of("curl -sf '$url'"), sha256_of("cat $file2"), '  the object is intact (sha256)');
%parts = part_requests();
is(join(',', map { "$_:" . ($parts{$_} // 0) } @confirmed), join(',', map { "$_:1" } @confirmed),
	'  every part recorded before the kill reached the server exactly once');
is(scalar(keys %parts), 20, '  and every part reached it');
my $confirmed = '{' . join(',', @confirmed) . '}';
is(psql(qq{SELECT string_agg((j.state ->> 'part') || ':' || j.total_attempts, ',' ORDER BY (j.state ->> 'part')::int)
	FROM hagen.job j JOIN hagen.job u ON u.id = j.parent_id AND u.kind <> 'compile' WHERE u.project_id = '$p2'
	  AND (j.state ->> 'part')::int = ANY ('$confirmed')}), $before,
	'  their jobs were not run again');
like(psql(qq{SELECT string_agg(message, '; ') FROM hagen.job_log l JOIN hagen.job j ON j.id = l.job_id
	WHERE j.parent_id = (SELECT id FROM hagen.job WHERE project_id = '$p2' AND kind = 'clip')}),
	qr/worker restarted; job taken up again/, '  the parts in flight were taken up again');

# 4. Canceled in the middle: the remaining parts stop and the upload is
# aborted (this server has no AbortMultipartUpload and says so: 405).
my ($p3) = clip_to_store('ws-canceled', 100);
$node->poll_query_until('postgres', qq{SELECT count(*) >= 2 FROM hagen.job j JOIN hagen.job u ON u.id = j.parent_id AND u.kind <> 'compile'
	WHERE u.project_id = '$p3' AND j.status = 'succeeded'}) or die 'no part was stored';
psql("SELECT hagen.cancel_video('$p3')");
$node->poll_query_until('postgres', qq{SELECT count(*) = 1 FROM hagen.job
	WHERE project_id = '$p3' AND kind = 'cancel' AND status = 'succeeded'}) or die 'no abort';
like(psql(qq{SELECT message FROM hagen.job_log l JOIN hagen.job j ON j.id = l.job_id
	WHERE j.project_id = '$p3' AND j.kind = 'cancel' AND message LIKE 'abort%'}),
	qr/abort of the multipart upload of ws-canceled\/videos\/.* answered HTTP 405: MethodNotAllowed/,
	'a canceled upload is aborted');
$node->poll_query_until('postgres', qq{SELECT count(*) = 0 FROM hagen.job
	WHERE project_id = '$p3' AND status IN ('queued', 'running')}) or die 'parts still live';
is(psql(qq{SELECT count(*) FILTER (WHERE j.status = 'succeeded') > 0 AND count(*) FILTER (WHERE j.status = 'canceled') > 0
	FROM hagen.job j JOIN hagen.job u ON u.id = j.parent_id AND u.kind <> 'compile' WHERE u.project_id = '$p3'}), 't',
	'  its parts stopped');

# 5. Deleting a project deletes its objects, more than 1000 of them, and
# nothing else.
my @mine = map { "ws-multipart/videos/$p/frame $_+.jpg" } 1 .. 1100;
my @others = ("ws-multipart/videos/$p2/keep.mp4", "ws-multipart/videos/keep.mp4",
	"ws-multipart/videos/${p}x/keep.mp4");
open my $cfg, '>', "$dir/curl.cfg" or die;
for my $k (@mine, @others)
{
	(my $enc = $k) =~ s/([^A-Za-z0-9\-._~\/])/sprintf('%%%02X', ord($1))/ge;
	print $cfg "url = \"$s3/videos/$enc\"\nupload-file = \"$dir/curl.cfg\"\noutput = \"/dev/null\"\n";
}
close $cfg;
system("curl -s --parallel --parallel-max 16 -K $dir/curl.cfg") == 0 or die 'could not seed the bucket';
my $listing = sub {
	my ($prefix) = @_;
	my $n = 0;
	my $token = '';
	for (;;)
	{
		my $xml = `curl -s '$s3/videos?list-type=2&prefix=$prefix$token'`;
		$n += () = $xml =~ /<Key>/g;
		my ($next) = $xml =~ /<NextContinuationToken>([^<]+)</ or last;
		$next =~ s/([^A-Za-z0-9\-._~])/sprintf('%%%02X', ord($1))/ge;
		$token = "&continuation-token=$next";
	}
	return $n;
};
is($listing->("ws-multipart%2Fvideos%2F$p%2F"), 1101, 'a project with 1101 objects');
psql("DELETE FROM hagen.video_project WHERE id = '$p'");
$node->poll_query_until('postgres', qq{SELECT status IN ('succeeded', 'failed') FROM hagen.job
	WHERE kind = 'purge' AND state ->> 'project_id' = '$p'}) or die 'the purge never finished';
is(psql(qq{SELECT status || ' ' || (state ->> 'deleted') || ' ' || (state ->> 'pages') || ' ' || coalesce(last_error, '')
	FROM hagen.job WHERE kind = 'purge' AND state ->> 'project_id' = '$p'}), 'succeeded 1101 2 ',
	'deleting the project purges its prefix: 1101 objects in 2 pages');
is($listing->("ws-multipart%2Fvideos%2F$p%2F"), 0, '  the prefix is empty');
is(join(',', map { `curl -s -o /dev/null -w '%{http_code}' '$s3/videos/$_'` } @others), '200,200,200',
	'  the objects of other projects are kept');

$node->stop;
stop_servers();
done_testing();
