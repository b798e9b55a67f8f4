# Where hagenkit leans on libraries instead of code of its own, at the
# edges: an outcome is written with PostgreSQL's JSON escaping from an
# answer full of hostile bytes (headers as libcurl parsed them, names that
# are not HTTP tokens left out, bytes that are not UTF-8 made '?'), and
# hagen.trusted_hosts entries are read by libcurl's URL parser, like the
# URLs they are compared with.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../lib";
use HagenTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $log = "$HagenTest::dir/requests.log";
my $utf8 = "\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x8e\xac";	# é 日本 🎬, as bytes

# The Fal.ai endpoint (a configured endpoint, so trusted) answers cancels
# with hostile answers; sixty headers come before Retry-After.
my $api = http_server(handler => sub {
	my ($path) = @_;
	if ($path =~ m{/hostile-json$})
	{
		return (503, {
			'Content-Type' => 'application/json', 'X-Quote' => "a\"b\\c", 'X-Bytes' => "\xff\xfe$utf8",
			"X-Bad\xff" => 'left out', 'X-Ctl' => "a\x01b", 'Retry-After' => '2',
			map { sprintf('A-Pad-%02d', $_) => $_ } 1 .. 60 },
			"{\"detail\": \"quote \\\" backslash \\\\ control \\u0001 $utf8 \xff\"}");
	}
	return (503, { 'Content-Type' => 'text/plain' }, "raw \xff\xfe bytes \0 nul \"q\" \\ <b>")
	  if $path =~ m{/hostile-raw$};
	return (404, { 'Content-Type' => 'text/plain' }, 'not here');
});
# An image host on another port: not trusted unless hagen.trusted_hosts says so.
my $images = http_server(log => $log, handler => sub {
	return (200, { 'Content-Type' => 'image/jpeg' }, "\xff\xd8\xff\xe0 jpeg");
});

my $node = pipeline_node('libraries', fal => "http://127.0.0.1:$api", s3 => "http://127.0.0.1:$api",
	s3_key => 'key', s3_secret => 'secret', settings => [ 'hagen.max_attempts' => '1' ]);

# 1. Outcomes from hostile answers.
my $p = $node->safe_psql('postgres', "SELECT hagen.create_project('ws')");

# Queues a provider cancel to $path; waits for its first answer to be
# recorded; returns (last_error, the warnings logged).
sub cancel_answer
{
	my ($path) = @_;
	my $job = $node->safe_psql('postgres', qq{
		INSERT INTO hagen.job (project_id, kind, lane, provider, step, state)
		VALUES ('$p', 'cancel', 'http', 'fal', 'cancel',
				jsonb_build_object('request_id', 'r', 'cancel_url', 'http://127.0.0.1:$api$path'))
		RETURNING id});
	$node->poll_query_until('postgres', "SELECT last_error IS NOT NULL FROM hagen.job WHERE id = $job")
	  or die "no answer recorded for $path";
	return map { $node->safe_psql('postgres', $_) }
	  ("SELECT last_error FROM hagen.job WHERE id = $job",
		"SELECT string_agg(message, ' / ') FROM hagen.job_log WHERE job_id = $job AND level <> 'info'");
}

my ($error, $warning) = cancel_answer('/hostile-json');
is($error, "cancel request: HTTP 503: quote \" backslash \\ control \x01 $utf8 ?",
	'a JSON answer with quotes, backslashes, control characters, UTF-8 and a stray byte is read whole');
my ($delay) = $warning =~ /retrying in (\d+) ms/;
ok(defined $delay && $delay >= 2000,
	'  its Retry-After is honoured, the 62nd of 68 headers with quotes, bad bytes and a bad name')
  or diag($warning);
unlike($warning, qr/could not (be )?record/, '  the outcome was recorded');

($error) = cancel_answer('/hostile-raw');
is($error, "cancel request: HTTP 503: raw ?? bytes ? nul \"q\" \\ <b>",
	'a raw answer with bytes that are not UTF-8 and a NUL becomes readable text');

is($node->safe_psql('postgres', q{SELECT count(*) FROM hagen.job_log WHERE message LIKE '%could not%record%'}),
	'0', 'no outcome failed to be recorded');

# 2. hagen.trusted_hosts, read by libcurl's URL parser.
sub set_trusted
{
	my ($value) = @_;
	reconfigure($node, 'hagen.trusted_hosts' => $value);
	$node->poll_query_until('postgres', "SELECT current_setting('hagen.trusted_hosts') = '$value'")
	  or die "hagen.trusted_hosts was not reloaded";
	return;
}

my $n = 0;

# Starts a clip whose source image is on the image host, named $host;
# whether the image was fetched (the server saw the request).
sub fetch_image
{
	my ($host) = @_;
	my $path = '/img-' . ++$n;
	my $clip = $node->safe_psql('postgres', qq{
		SELECT p FROM hagen.create_project('ws') p,
			LATERAL hagen.add_clip(p, 'http://$host:$images$path') c, LATERAL hagen.start_video(p) s});
	$node->poll_query_until('postgres', qq{
		SELECT status = 'failed' OR step <> 'image_fetch' FROM hagen.job
		WHERE project_id = '$clip' AND kind = 'clip'})
	  or die "no answer for $path";
	return 0 unless -e $log;
	open my $fh, '<', $log or die;
	return scalar grep { / \Q$path\E$/ } <$fh>;
}

ok(!fetch_image('127.0.0.1'), 'an image on a loopback host is refused by default');
set_trusted("127.0.0.1:$images");
ok(fetch_image('127.0.0.1'), 'a host:port entry lets it through');
set_trusted('127.0.0.1:' . ($images + 1));
ok(!fetch_image('127.0.0.1'), 'an entry with another port does not');
set_trusted('127.1');
ok(fetch_image('127.0.0.1'), 'an entry is read like a URL: "127.1" is 127.0.0.1, on any port');
set_trusted(" other.internal ,  LOCALHOST:$images ");
ok(fetch_image('localhost'), 'entries are split like a list setting, case and spaces aside');

$node->stop;
done_testing();
