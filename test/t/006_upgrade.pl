# Upgrades: every version can be installed, every upgrade path ends in
# exactly the catalog of a fresh install of the newest version (the lines
# of test/catalog.sql), and the data stored before the upgrade is kept.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../lib";
use HagenTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $catalog = slurp_file("$HagenTest::root/test/catalog.sql");

# Workers run in the postgres database; the databases compared here have none.
my $node = hagen_node('upgrade', create_extension => 0);

my $newest = $node->safe_psql('postgres',
	"SELECT default_version FROM pg_available_extensions WHERE name = 'hagenkit'");
my @versions = split /\n/, $node->safe_psql('postgres',
	"SELECT version FROM pg_available_extension_versions WHERE name = 'hagenkit' ORDER BY string_to_array(version, '.')::int[]");
ok(scalar(@versions) >= 2, "more than one version is installed: @versions");

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION hagenkit');
my $want = $node->safe_psql('fresh', $catalog);
like($want, qr/function hagen\.start_video/, 'the catalog description lists the API');

# Rows of every kind, stored at the old version; they must all survive.
my $data = q{
INSERT INTO hagen.music_track (id, name, audio_url, duration)
VALUES ('00000000-0000-0000-0000-00000000000a', 'calm', 'https://example.com/m.mp3', 60);
INSERT INTO hagen.video_project (id, workspace_id, metadata, music_track_id)
VALUES ('00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-0000000000ff', '{"name": "Elm St"}',
		'00000000-0000-0000-0000-00000000000a');
INSERT INTO hagen.video_clip (project_id, sequence_order, source_image_url, room_type)
SELECT '00000000-0000-0000-0000-000000000001', i, 'https://example.com/' || i || '.jpg', 'kitchen'
FROM generate_series(1, 3) i;
};
my $count = q{SELECT (SELECT count(*) FROM hagen.video_project) || '/' || (SELECT count(*) FROM hagen.video_clip)
	|| '/' || (SELECT count(*) FROM hagen.music_track) || '/' || (SELECT metadata ->> 'name' FROM hagen.video_project)};

foreach my $old (grep { $_ ne $newest } @versions)
{
	my $db = "from_" . ($old =~ s/\./_/gr);
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, "CREATE EXTENSION hagenkit VERSION '$old'");
	$node->safe_psql($db, $data);
	$node->safe_psql($db, 'ALTER EXTENSION hagenkit UPDATE');
	is($node->safe_psql($db, "SELECT extversion FROM pg_extension WHERE extname = 'hagenkit'"),
		$newest, "$old updates to $newest");
	my $got = $node->safe_psql($db, $catalog);
	is($got, $want, "catalog after $old -> $newest equals a fresh $newest install");
	if ($got ne $want)
	{
		my %w = map { $_ => 1 } split /\n/, $want;
		my %g = map { $_ => 1 } split /\n/, $got;
		diag("only in the upgraded: $_") for grep { !$w{$_} } split /\n/, $got;
		diag("only in the fresh: $_") for grep { !$g{$_} } split /\n/, $want;
	}
	is($node->safe_psql($db, $count), '1/3/1/Elm St', "data stored at $old is kept");
	# The upgraded install still works.
	like($node->safe_psql($db, q{SELECT hagen.get_video_path('00000000-0000-0000-0000-0000000000ff',
		'00000000-0000-0000-0000-000000000001', 'final.mp4')}), qr{/videos/.*/final\.mp4$},
		"the API works after $old -> $newest");
}

# pg_dump keeps the user data of the extension's tables.
$node->safe_psql('fresh', $data);
my $dump = "$PostgreSQL::Test::Utils::tmp_check/fresh.sql";
$node->command_ok(['pg_dump', '-d', $node->connstr('fresh'), '-f', $dump], 'pg_dump of a database with projects');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok(['psql', '-X', '-v', 'ON_ERROR_STOP=1', '-q', '-d', $node->connstr('restored'), '-f', $dump],
	'the dump restores');
is($node->safe_psql('restored', $count), '1/3/1/Elm St', 'projects, clips and music survive dump and restore');

$node->stop;
done_testing();
