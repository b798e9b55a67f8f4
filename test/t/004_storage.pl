# Storage through the S3 API against a server that verifies SigV4
# (@20minutes/s3rver): the store step of the pipeline signs its PUTs,
# awkward keys survive, presigned URLs work with plain curl and are
# refused when tampered with or expired, and a wrong secret is a readable
# error.
use strict;
use warnings;

use Digest::SHA qw(sha256_hex);
use FindBin;
use lib "$FindBin::Bin/../lib";
use HagenTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

need_servers();

my $dir = $HagenTest::dir;
my $secret = 'storage-test-secret';
my $s3 = s3_server(key => 'hagen-key', secret => $secret);

my $node = hagen_node('storage', fal => 'http://127.0.0.1:1', fal_key => 'test-id:test-secret',
	s3 => $s3, s3_key => 'hagen-key', s3_secret => $secret,
	settings => [ 'hagen.work_dir' => "$dir/work", 'hagen.max_attempts' => 2 ]);

# A clip job at its store step, with a generated file to upload.
sub store_clip
{
	my ($workspace, $bytes) = @_;
	my ($p, $c) = split /\|/, $node->safe_psql('postgres', qq{
		SELECT p || '|' || c FROM hagen.create_project(\$\$$workspace\$\$) p,
			LATERAL hagen.add_clip(p, 'https://img.example.com/a.jpg') c});
	mkdir "$dir/work"; mkdir "$dir/work/$p";
	open my $f, '>', "$dir/work/$p/$c.mp4" or die; binmode $f; print $f $bytes; close $f;
	$node->safe_psql('postgres', qq{
		SELECT hagen.start_video('$p');
		UPDATE hagen.job SET step = 'store', run_at = now() WHERE project_id = '$p';});
	$node->poll_query_until('postgres',
		"SELECT status IN ('succeeded', 'failed') FROM hagen.job WHERE project_id = '$p' AND kind = 'clip'")
	  or die 'the store step never finished';
	return ($p, $c);
}

sub fetch
{
	my ($url, @opts) = @_;
	my $body = `curl -s -g @opts -w '\\n%{http_code}' '$url'`;
	my ($content, $code) = $body =~ /^(.*)\n(\d+)$/s;
	return ($code // 0, $content // '');
}

my $data = join('', map { chr(($_ * 7) % 256) } 0 .. 300_000);
for my $ws ('ws-plain', 'ws 1+2 ü~(x)=,@!') {
	my ($p, $c) = store_clip($ws, $data);
	my $row = $node->safe_psql('postgres', qq{
		SELECT j.status || '|' || coalesce(j.last_error, '') || '|' || coalesce(c.clip_url, '')
		FROM hagen.job j JOIN hagen.video_clip c ON c.id = j.clip_id WHERE j.project_id = '$p'});
	my ($status, $err, $url) = split /\|/, $row;
	is($status, 'succeeded', "a clip of workspace \"$ws\" is stored with a signed PUT") or diag($err);
	my ($code, $got) = fetch($url);
	is($code, 200, '  its public URL answers');
	is(sha256_hex($got), sha256_hex($data), '  with the very bytes uploaded');
	my ($ct) = `curl -s -g -I '$url'` =~ /content-type:\s*(\S+)/i;
	is($ct, 'video/mp4', '  and the Content-Type kept');
}

# Presigned URLs, used with plain curl.
my $put = $node->safe_psql('postgres', "SELECT hagen.presign_url('presigned/a b+c.bin', 'PUT', '10 minutes')");
open my $f, '>', "$dir/upload.bin" or die; print $f "presigned payload"; close $f;
my ($code) = fetch($put, '-X PUT', "--data-binary \@$dir/upload.bin");
is($code, 200, 'a presigned PUT works with curl');
my $get = $node->safe_psql('postgres', "SELECT hagen.presign_url('presigned/a b+c.bin')");
my $got;
($code, $got) = fetch($get);
is("$code $got", '200 presigned payload', 'a presigned GET returns it');
(my $tampered = $get) =~ s/X-Amz-Signature=(.)/'X-Amz-Signature=' . ($1 eq 'a' ? 'b' : 'a')/e;
($code, $got) = fetch($tampered);
is($code, 403, 'a tampered presigned URL is refused');
like($got, qr/SignatureDoesNotMatch/, '  as SignatureDoesNotMatch');
my $old = $node->safe_psql('postgres',
	"SELECT hagen.presign_url('presigned/a b+c.bin', 'GET', '1 second', now() - interval '1 hour')");
($code, $got) = fetch($old);
is($code, 403, 'an expired presigned URL is refused');

# A wrong secret is a readable error on the clip, not a mystery.
reconfigure($node, 'hagen.s3_secret_access_key' => 'not-the-secret');
$node->poll_query_until('postgres', "SELECT true");
sleep 1;
my ($p) = store_clip('ws-wrong-secret', 'x');
like($node->safe_psql('postgres', "SELECT error_message FROM hagen.video_clip WHERE project_id = '$p'"),
	qr/upload of ws-wrong-secret\/videos\/.*\.mp4 to storage failed: HTTP 403: SignatureDoesNotMatch/,
	'a wrong secret fails the upload with the S3 error code');
unlike(slurp_file($node->logfile), qr/\Q$secret\E|not-the-secret/, 'no secret appears in the server log');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM hagen.job_log WHERE message LIKE '%$secret%' OR detail::text LIKE '%$secret%'"),
	'0', 'nor in the job log');

$node->stop;
stop_servers();
done_testing();
