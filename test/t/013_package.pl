# The Debian package: dpkg-buildpackage -us -uc -b builds
# postgresql-15-hagenkit_<version>_<arch>.deb (its own build runs the regress
# and isolation tests against the files it installed, see debian/rules);
# lintian finds no error in it; it holds the extension (hagenkit.so, the
# control file, every SQL script, upgrade scripts included) and
# hagen-compile in the server's bindir, at the version of hagenkit.control,
# as META.json says too.  Then a PostgreSQL installation whose only hagenkit
# files are the package's preloads it, runs CREATE EXTENSION (the newest
# version, and the oldest one updated), and passes plain `make installcheck`
# run against it as a running server.
#
# The package is never installed with dpkg -i: the other tests use the files
# `make install` put into the PostgreSQL directories and may run at the same
# time, and a test that died half-way would leave the system changed.  The
# .deb is extracted with dpkg -x into a copy of the PostgreSQL installation
# from which every hagenkit file was removed first (PostgreSQL finds its lib
# and share directories relative to its binaries), so whatever loads there
# can only come from the package, and the system is never touched.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../lib";
use HagenTest;
use File::Path qw(remove_tree);
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

for my $tool (qw(dpkg-buildpackage dh pg_buildext lintian))
{
	plan skip_all => "$tool is not installed (run test/deps.sh)" unless `which $tool` =~ /\S/;
}

# The makes run here are not part of the make that runs this test: without
# this, its command-line variables (REGRESS=, ISOLATION=, ...) would reach
# them through MAKEFLAGS.
delete @ENV{qw(MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES)};

my $root = $HagenTest::root;
my $dir = $HagenTest::dir;
my ($version) = slurp_file("$root/hagenkit.control") =~ /^default_version\s*=\s*'([^']+)'/m;
my ($major) = `pg_config --version` =~ /PostgreSQL (\d+)/;
chomp(my $arch = `dpkg --print-architecture`);
my $package = "postgresql-$major-hagenkit";
my $deb = "$dir/${package}_${version}_$arch.deb";

# 1. Build from a copy of the tree (a package build cleans and rebuilds it).
my $src = "$dir/src";
mkdir $src or die;
run("cd '$root' && tar --exclude=./.git --exclude=./node_modules --exclude='./tmp_check*' --exclude=./results "
	  . "--exclude=./output_iso --exclude=./log --exclude='*.o' --exclude='*.so' -cf - . | tar -xf - -C '$src'");
my $built = system("cd '$src' && dpkg-buildpackage -us -uc -b >'$dir/build.log' 2>&1") == 0;
ok($built, "dpkg-buildpackage -us -uc -b builds ${package}_${version}_$arch.deb")
  or diag(`tail -n 60 '$dir/build.log'`);
ok(-f $deb, '  named after hagenkit.control\'s default_version and the architecture');
my $build_log = slurp_file("$dir/build.log");
my @passed = $build_log =~ /^(?:test |ok \d+\s+[-+] )?\s*\S+\s+\.\.\. ok/mg;
my @failed = $build_log =~ /^(?:test |not ok \d+\s+[-+] )?\s*\S+\s+\.\.\. FAILED/mg;
ok(@passed >= 9 && !@failed, '  and its build ran the regress and isolation tests against the installed files ('
	  . scalar(@passed) . ' passed)');

# 2. lintian: no error.  Every tag it finds, down to the pedantic and
# experimental ones, is printed (the README says why each one stays).
my $lintian = `lintian --display-info --display-experimental --pedantic '$dir/hagenkit_${version}_$arch.changes' 2>&1`;
note("lintian:\n$lintian");
is(join('', grep { /^E: / } split /^/, $lintian), '', 'lintian finds no error');

# 3. What the package holds.
my @files = map { m{^\S+\s+\S+\s+\d+\s+\S+\s+\S+\s+\./(.*\S)} ? $1 : () } split /\n/, `dpkg-deb -c '$deb'`;
my %in = map { $_ => 1 } @files;
is(`dpkg-deb -f '$deb' Package Version`, "Package: $package\nVersion: $version\n",
	"the package is $package at version $version");
ok($in{"usr/lib/postgresql/$major/lib/hagenkit.so"}, '  it holds hagenkit.so in the server\'s lib directory');
ok($in{"usr/lib/postgresql/$major/bin/hagen-compile"}, '  and hagen-compile in its bindir, as make install puts it');
my @scripts = sort(map({ s{^.*/}{}r } glob("$root/sql/hagenkit--*.sql")), "hagenkit--$version.sql");
my %uniq = map { $_ => 1 } @scripts;
@scripts = sort keys %uniq;
my @shipped = sort map { m{^usr/share/postgresql/$major/extension/(.+)$} ? $1 : () } @files;
is(join(' ', @shipped), join(' ', sort('hagenkit.control', @scripts)),
	'  and the control file and every SQL script, upgrade scripts included (' . scalar(@scripts) . ')');
like(`dpkg-deb -f '$deb' Depends`, qr/postgresql-$major\b/, '  it depends on the server it was built for');

# 4. META.json (PGXN) names the same version.
my $meta = decode_json(slurp_file("$root/META.json"));
is_deeply([ map { defined $meta->{$_} ? $_ : () } qw(name abstract version maintainer license provides meta-spec) ],
	[qw(name abstract version maintainer license provides meta-spec)], 'META.json has every field PGXN requires');
is("$meta->{name} $meta->{version} $meta->{provides}{hagenkit}{version} $meta->{'meta-spec'}{version}",
	"hagenkit $version.0 $version.0 1.0.0", '  and the version of hagenkit.control, as SemVer');

# 5. A PostgreSQL installation whose hagenkit is only the package's.
my $inst = "$dir/inst";
chomp(my $bindir = `pg_config --bindir`);
chomp(my $sharedir = `pg_config --sharedir`);
(my $libroot = $bindir) =~ s{/bin$}{};
run("mkdir -p '$inst/usr/lib/postgresql' '$inst/usr/share/postgresql' '$inst/usr/include'");
run("cp -a '$libroot' '$inst/usr/lib/postgresql/$major'");
run("cp -a '$sharedir' '$inst/usr/share/postgresql/$major'");
symlink('/usr/include/postgresql', "$inst/usr/include/postgresql") or die;
my $pginst = "$inst/usr/lib/postgresql/$major";
unlink("$pginst/bin/hagen-compile", "$pginst/lib/hagenkit.so",
	glob("$inst/usr/share/postgresql/$major/extension/hagenkit*"));
remove_tree(glob("$pginst/lib/bitcode/hagenkit*"));
is(`find '$inst/' -name 'hagenkit*' -o -name 'hagen-compile*'`, '',
	'a copy of the PostgreSQL installation without any hagenkit file');
run("dpkg -x '$deb' '$inst'");

is(`'$pginst/bin/hagen-compile' --version` =~ /"version":"([^"]+)"/ ? $1 : 'none', $version,
	'the packaged hagen-compile runs');

my $conf = slurp_file("$root/test/hagenkit.conf");
my $node = hagen_node('package', install_path => $pginst, extra => $conf, create_extension => 0);
like($node->safe_psql('postgres', 'SELECT version()'), qr/PostgreSQL $major\./, 'its server starts with hagenkit preloaded');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type IN ('hagenkit dispatcher', 'hagenkit compile worker')"),
	'  and the packaged library starts its workers');
$node->safe_psql('postgres', 'CREATE DATABASE pkg');
$node->safe_psql('pkg', 'CREATE EXTENSION hagenkit');
is($node->safe_psql('pkg', "SELECT extversion FROM pg_extension WHERE extname = 'hagenkit'"), $version,
	"CREATE EXTENSION hagenkit installs $version from the packaged files");
like($node->safe_psql('pkg', "SELECT hagen.get_video_path('ws', '00000000-0000-0000-0000-000000000001', 'final.mp4')"),
	qr{^ws/videos/00000000-0000-0000-0000-000000000001/final\.mp4$}, '  and its API answers');
my @versions = split /\n/, $node->safe_psql('pkg',
	"SELECT version FROM pg_available_extension_versions WHERE name = 'hagenkit' ORDER BY string_to_array(version, '.')::int[]");
$node->safe_psql('postgres', 'CREATE DATABASE pkg_old');
$node->safe_psql('pkg_old', "CREATE EXTENSION hagenkit VERSION '$versions[0]'");
$node->safe_psql('pkg_old', 'ALTER EXTENSION hagenkit UPDATE');
is($node->safe_psql('pkg_old', "SELECT extversion FROM pg_extension WHERE extname = 'hagenkit'"), $version,
	"the oldest packaged version ($versions[0]) updates to $version through the packaged upgrade scripts");

# 6. make installcheck against this running server (the PGXS convention):
# the regress and isolation tests, with the packaged files.
my ($regress) = slurp_file("$src/Makefile") =~ /^REGRESS\s*=\s*(.*)$/m;
my ($isolation) = slurp_file("$src/Makefile") =~ /^ISOLATION\s*=\s*(.*)$/m;
my @tests = (split(' ', $regress), split(' ', $isolation));
my $host = $node->host;
my $port = $node->port;
my $check = system("cd '$src' && PGHOST='$host' PGPORT=$port PG_CONFIG='$pginst/bin/pg_config' "
	  . "make installcheck TAP_TESTS= >'$dir/installcheck.log' 2>&1") == 0;
my $log = slurp_file("$dir/installcheck.log");
my @ok = $log =~ /^(?:test |ok \d+\s+[-+] )?\s*\S+\s+\.\.\. ok/mg;
ok($check && @ok == @tests, 'make installcheck passes against the running server: ' . scalar(@ok) . ' of '
	  . scalar(@tests) . ' regress and isolation tests')
  or diag($log . (-f "$src/regression.diffs" ? slurp_file("$src/regression.diffs") : ''));
unlike($log, qr/temp-instance|creating temporary instance/, '  without starting a server of its own');

$node->stop;
done_testing();
