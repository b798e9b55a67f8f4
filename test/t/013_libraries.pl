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
use IO::Select;
use IO::Socket::INET;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $log = "$HagenTest::dir/requests.log";

# A small HTTP server: the Fal.ai endpoint (port $port, trusted as a
# configured endpoint) and an image host on another port (not trusted
# unless hagen.trusted_hosts says so).
my $api = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 64, ReuseAddr => 1)
  or die "listen: $!";
my $images = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 64, ReuseAddr => 1)
  or die "listen: $!";
my ($port, $image_port) = ($api->sockport, $images->sockport);
my $utf8 = "\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x8e\xac";	# é 日本 🎬, as bytes
my $server = fork();
die "fork: $!" unless defined $server;
if ($server == 0)
{
	my $sel = IO::Select->new($api, $images);
	while (my @ready = $sel->can_read)
	{
		for my $l (@ready)
		{
			my $c = $l->accept or next;
			my $line = <$c> // '';
			while (my $h = <$c>) { last if $h =~ /^\r?\n$/; }
			my ($path) = $line =~ m{^\w+ (\S+)};
			$path //= '';
			open my $fh, '>>', $log; print $fh "$path\n"; close $fh;
			my ($status, $headers, $body) = (404, "Content-Type: text/plain\r\n", 'not here');
			if ($path =~ m{/hostile-json$})
			{
				$status = 503;
				$headers = "Content-Type: application/json\r\nX-Quote: a\"b\\c\r\nX-Bytes: \xff\xfe$utf8\r\n"
				  . "X-Bad\xff: left out\r\nX-Ctl: a\x01b\r\nX-Dup: one\r\nX-Dup: two\r\n"
				  . join('', map { "X-Pad-$_: $_\r\n" } 1 .. 60) . "Retry-After: 2\r\n";
				$body = "{\"detail\": \"quote \\\" backslash \\\\ control \\u0001 $utf8 \xff\"}";
			}
			elsif ($path =~ m{/hostile-raw$})
			{
				($status, $body) = (503, "raw \xff\xfe bytes \0 nul \"q\" \\ <b>");
			}
			elsif ($path =~ m{^/img})
			{
				($status, $headers, $body) = (200, "Content-Type: image/jpeg\r\n", "\xff\xd8\xff\xe0 jpeg");
			}
			print $c "HTTP/1.1 $status X\r\n${headers}Content-Length: " . length($body)
			  . "\r\nConnection: close\r\n\r\n$body";
			close $c;
		}
	}
	exit 0;
}
END { kill 'TERM', $server if $server; }

my $node = pipeline_node('libraries', fal => "http://127.0.0.1:$port", s3 => "http://127.0.0.1:$port",
	s3_key => 'key', s3_secret => 'secret',
	extra => "hagen.max_attempts = 1\nhagen.fal_image_mode = 'upload'\n");

# 1. Outcomes from hostile answers.
my $p = $node->safe_psql('postgres', "SELECT hagen.create_project('ws')");

# Queues a provider cancel to $path; waits for its first answer to be
# recorded; returns (last_error, the warning logged).
sub cancel_answer
{
	my ($path) = @_;
	my $job = $node->safe_psql('postgres', qq{
		INSERT INTO hagen.job (project_id, kind, lane, provider, step, state)
		VALUES ('$p', 'cancel', 'http', 'fal', 'cancel',
				jsonb_build_object('request_id', 'r', 'cancel_url', 'http://127.0.0.1:$port$path'))
		RETURNING id});
	$node->poll_query_until('postgres', "SELECT last_error IS NOT NULL FROM hagen.job WHERE id = $job")
	  or die "no answer recorded for $path";
	return map {
		$node->safe_psql('postgres', $_)
	} ("SELECT last_error FROM hagen.job WHERE id = $job",
		"SELECT string_agg(message, ' / ') FROM hagen.job_log WHERE job_id = $job AND level <> 'info'");
}

my ($error, $warning) = cancel_answer('/hostile-json');
is($error, "cancel request: HTTP 503: quote \" backslash \\ control \x01 $utf8 ?",
	'a JSON answer with quotes, backslashes, control characters, UTF-8 and a stray byte is read whole');
my ($delay) = $warning =~ /retrying in (\d+) ms/;
ok(defined $delay && $delay >= 2000,
	'  its Retry-After is honoured among 70 headers with quotes, bad bytes and a bad name')
  or diag($warning);
unlike($warning, qr/could not (be )?record/, '  the outcome was recorded');

($error) = cancel_answer('/hostile-raw');
is($error, "cancel request: HTTP 503: raw ?? bytes ? nul \"q\" \\ <b>",
	'a raw answer with bytes that are not UTF-8 and a NUL becomes readable text');

my $headers = $node->safe_psql('postgres', q{
	SELECT count(*) FROM hagen.job_log WHERE message LIKE '%could not%record%'});
is($headers, '0', 'no outcome failed to be recorded');

# 2. hagen.trusted_hosts, read by libcurl's URL parser.
sub set_trusted
{
	my ($value) = @_;
	$node->append_conf('postgresql.conf', "hagen.trusted_hosts = '$value'\n");
	$node->reload;
	$node->poll_query_until('postgres', "SELECT current_setting('hagen.trusted_hosts') = '$value'")
	  or die "hagen.trusted_hosts was not reloaded";
	return;
}

my $n = 0;

# Fetches an image from the image host as a clip's source; whether it was
# fetched (the server saw the request) and the clip job's error.
sub fetch_image
{
	my ($host) = @_;
	my $path = '/img-' . ++$n;
	my $clip = $node->safe_psql('postgres', qq{
		SELECT p FROM hagen.create_project('ws') p,
			LATERAL hagen.add_clip(p, 'http://$host:$image_port$path') c, LATERAL hagen.start_video(p) s});
	$node->poll_query_until('postgres', qq{
		SELECT status = 'failed' OR step <> 'image_fetch' FROM hagen.job WHERE project_id = '$clip'})
	  or die "no answer for $path";
	open my $fh, '<', $log or die;
	my $seen = grep { $_ eq "$path\n" } <$fh>;
	return $seen;
}

ok(!fetch_image('127.0.0.1'), 'an image on a loopback host is refused by default');
set_trusted("127.0.0.1:$image_port");
ok(fetch_image('127.0.0.1'), 'a host:port entry lets it through');
set_trusted('127.0.0.1:' . ($image_port + 1));
ok(!fetch_image('127.0.0.1'), 'an entry with another port does not');
set_trusted('127.1');
ok(fetch_image('127.0.0.1'), 'an entry is read like a URL: "127.1" is 127.0.0.1, on any port');
set_trusted(" other.internal ,  LOCALHOST:$image_port ");
ok(fetch_image('localhost'), 'entries are split like a list setting, case and spaces aside');

$node->stop;
done_testing();
