# The network guard: URLs from users and providers may not reach loopback,
# private, link-local, CGNAT, multicast or metadata addresses, in any
# spelling, directly or through a redirect; downloads have a size limit.
# Each refusal is a clear error on the clip, and nothing is fetched.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../lib";
use HagenTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $log = "$HagenTest::dir/requests.log";

# A small HTTP server on two loopback addresses: 127.0.0.2 is a configured
# (trusted) endpoint's host, 127.0.0.1 is reached only by untrusted names.
my $port = http_server(addresses => [ '127.0.0.2', '127.0.0.1' ], log => $log, handler => sub {
	my ($path, $address, $listening) = @_;
	return (302, { Location => "http://localhost:$listening/image.jpg" }, '') if $path eq '/redirect';
	return (200, { 'Content-Type' => 'image/jpeg' }, 'x' x (11 * 1024 * 1024)) if $path eq '/big';
	return (200, { 'Content-Type' => 'text/html' }, '<html>not an image</html>') if $path eq '/page';
	return (200, { 'Content-Type' => 'image/jpeg' }, "\xff\xd8\xff\xe0 fake jpeg");
});

my $node = hagen_node('guard', fal => "http://127.0.0.2:$port", fal_key => 'test-id:test-secret',
	s3 => "http://127.0.0.2:$port", s3_key => 'AKID', s3_secret => 'secret',
	settings => [ 'hagen.max_attempts' => 1 ]);

# Starts a one-clip project whose image is at $url; waits until its job is
# done fetching; returns [the job's step, status, last error].
sub fetch_image
{
	my ($url, $framing) = @_;
	$framing //= 'crop';
	my $p = $node->safe_psql('postgres', qq{
		SELECT p FROM hagen.create_project('ws', framing => '$framing') p,
			LATERAL hagen.add_clip(p, '$url') c, LATERAL hagen.start_video(p) s});
	$node->poll_query_until('postgres', qq{
		SELECT status = 'failed' OR step <> 'image_fetch' FROM hagen.job WHERE project_id = '$p'})
	  or die "no answer for $url";
	return [ split /\|/, $node->safe_psql('postgres',
		"SELECT step, status, coalesce(last_error, '') FROM hagen.job WHERE project_id = '$p'") ];
}

sub requests
{
	return 0 unless -e $log;
	open my $fh, '<', $log or die;
	my @l = <$fh>;
	return scalar @l;
}

my @refused = (
	[ "http://localhost:$port/image.jpg", 'loopback address', 'a name resolving to loopback' ],
	[ "http://127.1:$port/image.jpg", 'loopback address', 'short IPv4 form' ],
	[ "http://2130706433:$port/image.jpg", 'loopback address', 'decimal IPv4 form' ],
	[ "http://0x7f000001:$port/image.jpg", 'loopback address', 'hexadecimal IPv4 form' ],
	[ "http://017700000001:$port/image.jpg", 'loopback address', 'octal IPv4 form' ],
	[ "http://[::1]:$port/image.jpg", 'loopback address', 'IPv6 loopback' ],
	[ "http://[::ffff:127.0.0.1]:$port/image.jpg", 'loopback address', 'IPv4-mapped IPv6 loopback' ],
	[ "http://0.0.0.0:$port/image.jpg", '"this network" address', 'the unspecified address' ],
	[ 'http://10.0.0.1/image.jpg', 'private address', 'RFC 1918 10/8' ],
	[ 'http://172.16.5.4/image.jpg', 'private address', 'RFC 1918 172.16/12' ],
	[ 'http://192.168.1.1/image.jpg', 'private address', 'RFC 1918 192.168/16' ],
	[ 'http://169.254.169.254/latest/meta-data/', 'cloud metadata address', 'the metadata address' ],
	[ 'http://169.254.10.10/image.jpg', 'link-local address', 'IPv4 link-local' ],
	[ 'http://100.64.0.1/image.jpg', 'carrier-grade NAT address', 'CGNAT' ],
	[ 'http://224.0.0.1/image.jpg', 'multicast address', 'IPv4 multicast' ],
	[ 'http://240.0.0.1/image.jpg', 'reserved address', 'reserved' ],
	[ 'http://[fd00::1]/image.jpg', 'private address', 'IPv6 unique local' ],
	[ 'http://[fe80::1]/image.jpg', 'link-local address', 'IPv6 link-local' ],
	[ 'http://[ff02::1]/image.jpg', 'multicast address', 'IPv6 multicast' ],
	[ 'http://[64:ff9b::a9fe:a9fe]/image.jpg', 'cloud metadata address', 'NAT64 form of the metadata address' ],
);
for my $case (@refused)
{
	my ($url, $rule, $what) = @$case;
	my $before = requests();
	my $r = fetch_image($url);
	is($r->[1], 'failed', "$what ($url) is refused");
	like($r->[2], qr/refused to fetch image \Q$url\E: .*a \Q$rule\E/, "  with an error naming the URL and the rule");
	is(requests(), $before, '  and nothing was fetched');
}

# A trusted host's redirect to a refused address is refused at the hop.
my $before = requests();
my $r = fetch_image("http://127.0.0.2:$port/redirect");
is($r->[1], 'failed', 'a redirect to loopback is refused');
like($r->[2], qr/localhost:$port\/image\.jpg: it resolves to (127\.0\.0\.1|::1), a loopback address/, '  at the hop, naming it');
is(requests(), $before + 1, '  only the redirect itself was fetched');

# Size limit: the download stops at 10 MB for an image sent as it is (a
# photo fitted to the aspect ratio is written again, smaller: 50 MB).
$r = fetch_image("http://127.0.0.2:$port/big", 'none');
is($r->[1], 'failed', 'an oversized download is refused');
like($r->[2], qr/larger than 10 MB/, '  with a clear error');

# What is not an image is refused before it is uploaded anywhere.
$r = fetch_image("http://127.0.0.2:$port/page");
like($r->[2], qr/is not a JPEG, PNG, WebP, GIF or AVIF image \(Content-Type "text\/html"\)/,
	'a web page given as an image is refused');

# A trusted host is fetched; so is a host listed in hagen.trusted_hosts.
$r = fetch_image("http://127.0.0.2:$port/image.jpg");
isnt($r->[0], 'image_fetch', 'an image on a configured endpoint host is fetched');
reconfigure($node, 'hagen.trusted_hosts' => 'assets.internal, localhost');
$node->poll_query_until('postgres', "SELECT current_setting('hagen.trusted_hosts') <> ''");
sleep 1;
$r = fetch_image("http://localhost:$port/image.jpg");
isnt($r->[0], 'image_fetch', 'a host listed in hagen.trusted_hosts is fetched');

# The server is still up, and no process crashed.
is($node->safe_psql('postgres', 'SELECT 1'), '1', 'the server is up');
ok(!grep({ /terminated by signal/ } slurp_file($node->logfile)), 'no process crashed');

$node->stop;
stop_servers();
done_testing();
