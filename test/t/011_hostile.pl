# Hostile input that only shows on the network: private, loopback and
# metadata addresses in every spelling, names resolving to loopback, a
# redirect into the metadata service, an oversized image, files that are
# not images, a hostile music URL.  Each fails its clip or project with a
# message that says what was refused; no process crashes and the server
# never restarts.  Prints the table of cases and messages.
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

my $s3 = s3_server(key => 'h-key', secret => 'h-secret');
my $fal = fal_sim();

# A trusted host (hagen.trusted_hosts) that answers every request with a
# redirect into the cloud metadata service.
my $redirect_port = http_server(addresses => ['127.0.0.3'],
	handler => sub { return (302, { Location => 'http://169.254.169.254/latest/meta-data/' }, ''); });

# Files in the bucket: an image of 11 MB, a text file, and bytes that claim
# to be a JPEG; and one good photo.
run("head -c 11534336 /dev/urandom > $dir/big.jpg");
put_object($s3, 'bad/big.jpg', "$dir/big.jpg", 'image/jpeg');
run("echo 'just text' > $dir/notes.txt");
put_object($s3, 'bad/notes.jpg', "$dir/notes.txt", 'text/plain');
run("head -c 5000 /dev/urandom > $dir/fake.jpg");
put_object($s3, 'bad/fake.jpg', "$dir/fake.jpg", 'image/jpeg');
my ($ok_photo) = put_photos($s3, 1);

my $node = pipeline_node('hostile', fal => $fal, s3 => $s3, s3_key => 'h-key', s3_secret => 'h-secret',
	settings => [ 'hagen.compile_workers' => 1, 'hagen.trusted_hosts' => '127.0.0.3' ]);
my $started = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');

# Each case: one project with one clip from the URL, and what the error
# must say.
my @cases = (
	['cloud metadata address', 'http://169.254.169.254/latest/meta-data/iam', qr/refused.*(link-local|metadata|not allowed|private)/i],
	['private IPv4', 'http://10.1.2.3/house.jpg', qr/refused.*(private|not allowed)/i],
	['loopback, another port of the storage host', 'http://127.0.0.1:1/house.jpg', qr/refused.*loopback/i],
	['loopback IPv6', 'http://[::1]/house.jpg', qr/refused.*(loopback|not allowed)/i],
	['unique-local IPv6', 'http://[fd00::1]/house.jpg', qr/refused.*(private|not allowed|unique)/i],
	['IPv4-mapped IPv6 metadata', 'http://[::ffff:169.254.169.254]/x.jpg', qr/refused/i],
	['decimal IP (2130706433)', 'http://2130706433/house.jpg', qr/refused.*loopback/i],
	['octal IP (0177.0.0.1)', 'http://0177.0.0.1/house.jpg', qr/refused.*loopback/i],
	['hex IP (0x7f000001)', 'http://0x7f000001/house.jpg', qr/refused.*loopback/i],
	['name resolving to loopback', 'http://localhost/house.jpg', qr/refused.*(loopback|not allowed)/i],
	['0.0.0.0', 'http://0.0.0.0/house.jpg', qr/refused/i],
	['redirect into the metadata service', "http://127.0.0.3:$redirect_port/house.jpg", qr/refused.*169\.254|refused.*redirect/i],
	['image larger than 10 MB', "$s3/videos/bad/big.jpg", qr/larger than 10 MB, the most the model takes/, 'none'],
	['a text file, not an image', "$s3/videos/bad/notes.jpg", qr/not a JPEG, PNG, WebP, GIF or AVIF image/],
	['random bytes served as a JPEG', "$s3/videos/bad/fake.jpg", qr/image|load|decode/i],
);

my %project;
for my $c (@cases)
{
	# (A photo that is fitted to the aspect ratio may be up to 50 MB: it is
	# written again, smaller; one sent as it is may not pass the model's 10 MB.)
	my ($what, $url, $want, $framing) = @$c;
	my $p = $node->safe_psql('postgres', "SELECT hagen.create_project('ws-hostile', framing => '"
		  . ($framing // 'crop') . "')");
	$node->safe_psql('postgres', "SELECT hagen.add_clip('$p', \$u\$$url\$u\$)");
	$node->safe_psql('postgres', "SELECT hagen.start_video('$p')");
	$project{$what} = $p;
}
# And a music track on the metadata service for a project whose clip is
# fine.  add_music_track refuses such a URL at once; a row stored before it
# did (or by hand) is still refused by the guard when fetched.
my $refused;
$node->psql('postgres', q{SELECT hagen.add_music_track('Bad', 'http://169.254.169.254/music.mp3')},
	on_error_stop => 0, stderr => \$refused);
like($refused, qr/can never be fetched: cloud metadata address/,
	'add_music_track refuses a URL on the metadata service at once');
$node->safe_psql('postgres', q{INSERT INTO hagen.music_track (name, audio_url)
	VALUES ('Bad', 'http://169.254.169.254/music.mp3')});
my $mp = $node->safe_psql('postgres', q{SELECT hagen.create_project('ws-hostile',
	music_track_id => (SELECT id FROM hagen.music_track WHERE name = 'Bad'))});
$node->safe_psql('postgres', "SELECT hagen.add_clip('$mp', '$ok_photo')");
$node->safe_psql('postgres', "SELECT hagen.start_video('$mp')");

my @table;
for my $c (@cases, ['music track on the metadata service', 'http://169.254.169.254/music.mp3', qr/music track .*cloud metadata address/])
{
	my ($what, $url, $want) = @$c;
	my $p = $project{$what} // $mp;
	local $PostgreSQL::Test::Utils::timeout_default = 120;
	$node->poll_query_until('postgres', "SELECT status IN ('failed', 'completed') FROM hagen.video_project WHERE id = '$p'");
	my ($status, $err) = split /\|/, $node->safe_psql('postgres',
		"SELECT status || '|' || coalesce(error_message, '') FROM hagen.video_project WHERE id = '$p'"), 2;
	$err //= '';
	like("$status: $err", qr/^failed: .*$want/s, "$what: the project fails, saying why");
	$err =~ s/^all 1 clips failed: clip 0: //;
	$err =~ s/\Q$s3\E/http:\/\/s3/g;
	push @table, "| $what | `$url` | $err |";
}
is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $started, 'the server never restarted');
ok($node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM pg_stat_activity
	WHERE backend_type IN ('hagenkit dispatcher', 'hagenkit compile worker')}), 'and its workers are all running');
is($node->safe_psql('postgres', "SELECT count(*) FROM hagen.video_project WHERE workspace_id = 'ws-hostile'"),
	scalar(@cases) + 1, 'every project is still there');
note("| case | input | error |\n|---|---|---|\n" . join("\n", @table));

$node->stop;
stop_servers();
done_testing();
