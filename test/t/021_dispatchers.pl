# Several dispatchers (hagen.dispatchers = 2): both take work from the http
# lane, hagen.max_inflight holds for the two together (a server that holds
# every request 200 ms counts how many it holds at once), only one of them
# purges history, and http work does not wake the compile worker.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../lib";
use HagenTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $url = start_server('slow', "$FindBin::Bin/../lib/slow_server.js", '--delay-ms', 200);
my $max_inflight = 8;

my $node = hagen_node('dispatchers', settings => {
	'hagen.dispatchers' => 2, 'hagen.max_inflight' => $max_inflight,
	'hagen.fal_key' => 'test-id:test-secret', 'hagen.fal_queue_url' => "$url/queue",
	'track_functions' => 'all' });
my $psql = sub { return $node->safe_psql('postgres', $_[0]); };

is($psql->(q{SELECT string_agg(application_name, ', ' ORDER BY application_name)
	FROM pg_stat_activity WHERE backend_type = 'hagenkit dispatcher'}),
	'hagenkit dispatcher 1, hagenkit dispatcher 2', 'two dispatchers run');
my $compile_pid = $psql->(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'hagenkit compile worker'});

# 240 provider cancels (one PUT each), answered after 200 ms each: at 8 at a
# time, about 6 s of work.
my $project = $psql->(q{SELECT hagen.create_project('ws-dispatchers')});
$psql->(qq{INSERT INTO hagen.job (project_id, kind, lane, provider, step, state)
	SELECT '$project', 'cancel', 'http', 'fal', 'cancel',
		jsonb_build_object('request_id', 'r' || i, 'cancel_url', '$url/queue/fal-ai/kling-video/requests/r' || i || '/cancel')
	FROM generate_series(1, 240) i});

# While they run: which backends hold leases, and when the compile worker
# last woke (its pg_stat_activity.state_change moves at every claim it makes).
my (%owners, %compile_wakes, $peak_running);
my $left = 240;
my $deadline = time() + 120;
while ($left > 0 && time() < $deadline)
{
	my ($l, $running, $owners, $change) = split /\|/, $psql->(qq{
		SELECT count(*) FILTER (WHERE status IN ('queued', 'running')),
			   count(*) FILTER (WHERE status = 'running'),
			   coalesce(string_agg(DISTINCT lease_owner::text, ','), ''),
			   (SELECT state_change FROM pg_stat_activity WHERE pid = $compile_pid)
		FROM hagen.job WHERE kind = 'cancel'});
	$left = $l;
	$peak_running = $running if !defined $peak_running || $running > $peak_running;
	$owners{$_} = 1 for grep { length } split /,/, $owners;
	$compile_wakes{$change} = 1 if defined $change && $change ne '';
	usleep(50_000);
}
is($left, 0, 'every job was carried out');
is($psql->(q{SELECT count(*) FROM hagen.job WHERE kind = 'cancel' AND status = 'succeeded'}), 240,
	'and every one succeeded');

my $dispatchers = $psql->(q{SELECT string_agg(pid::text, ',' ORDER BY pid)
	FROM pg_stat_activity WHERE backend_type = 'hagenkit dispatcher'});
my @both = grep { $owners{$_} } split /,/, $dispatchers;
is(scalar(@both), 2, 'both dispatchers held leases (' . join(',', sort keys %owners) . ')');

my $stats = `curl -s $url/_stats`;
my ($served) = $stats =~ /"served":(\d+)/;
my ($max) = $stats =~ /"max_concurrent":(\d+)/;
is($served, 240, 'the server answered 240 requests');
ok($max <= $max_inflight, "at most hagen.max_inflight = $max_inflight requests at once, both dispatchers together (server saw $max)");
ok($max >= $max_inflight - 1, "and the limit was used (server saw $max at once, the table $peak_running running)");

# Dozens of commits queued http work meanwhile; the compile worker, with no
# work of its lane, woke only on its own 5 s timer.
my $wakes = scalar(keys %compile_wakes);
ok($wakes <= 3, "http work did not wake the compile worker ($wakes distinct wake-ups in about 6 s)");

# History is purged by one dispatcher only.  A dispatcher purges when it
# starts (with the extension installed, so: after a restart) and hourly.
$node->restart;
$node->poll_query_until('postgres',
	q{SELECT coalesce((SELECT calls FROM pg_stat_user_functions WHERE funcname = 'purge_history'), 0) >= 1})
  or diag('purge_history never called');
sleep 2;
is($psql->(q{SELECT calls FROM pg_stat_user_functions WHERE funcname = 'purge_history'}), 1,
	'one dispatcher purges history, not both');

my $log = slurp_file($node->logfile);
unlike($log, qr/deadlock detected/, 'no deadlock between the dispatchers');

$node->stop;
stop_servers();
done_testing();
