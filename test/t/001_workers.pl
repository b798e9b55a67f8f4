# The workers: they start with the server, are woken within a second of a
# commit, survive a reload, and take a job up again after being killed.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../lib";
use HagenTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# A server that accepts connections and never answers: requests to it stay
# in flight.  And a port where nothing listens: requests to it fail at once.
my $stall_port = silent_port();
my $closed_port = closed_port();

my $node = hagen_node('workers', fal => "http://127.0.0.1:$closed_port", fal_key => 'test-id:test-secret',
	s3 => "http://127.0.0.1:$closed_port", s3_key => 'AKID', s3_secret => 'secret',
	settings => [ 'hagen.poll_interval' => '100ms', 'hagen.fal_image_mode' => 'url', 'restart_after_crash' => 'on' ]);

sub worker_pid
{
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'hagenkit dispatcher'");
}

# A started project of one clip, its photo sent as it is (no fitting: the
# submit is its first step); returns its id.
sub start_project
{
	my ($ws) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT p FROM hagen.create_project('$ws', framing => 'none') p,
			LATERAL hagen.add_clip(p, 'https://img.example.com/a.jpg') c,
			LATERAL hagen.start_video(p) s});
}

# Seconds between a project's start (its commit) and its first job's claim.
sub wake_latency
{
	my ($project) = @_;
	$node->poll_query_until('postgres',
		"SELECT started_at IS NOT NULL FROM hagen.job WHERE project_id = '$project' AND kind = 'clip'")
	  or die 'the job was never claimed';
	return $node->safe_psql('postgres', qq{
		SELECT round(extract(epoch FROM j.started_at - p.started_at)::numeric, 4)
		FROM hagen.job j JOIN hagen.video_project p ON p.id = j.project_id
		WHERE j.project_id = '$project' AND j.kind = 'clip'});
}

ok( $node->poll_query_until('postgres', qq{
		SELECT count(*) = 2 FROM pg_stat_activity
		WHERE backend_type IN ('hagenkit dispatcher', 'hagenkit compile worker')}),
	'the dispatcher and one compile worker run');

my $pid = worker_pid();
my $p1 = start_project('ws-wake');
my $latency = wake_latency($p1);
diag("wake-up latency after commit: $latency s");
cmp_ok($latency, '<', 1.0, 'the dispatcher takes up new work within a second of the commit');

# The connection is refused: the submit is retried with back-off, visibly.
ok( $node->poll_query_until('postgres', qq{
		SELECT count(*) > 0 FROM hagen.job_log
		WHERE project_id = '$p1' AND level = 'warning' AND message LIKE '%retrying in%'}),
	'a refused connection is retried with back-off and logged');
like(
	$node->safe_psql('postgres', "SELECT last_error FROM hagen.job WHERE project_id = '$p1'"),
	qr/submit to Fal\.ai: .*127\.0\.0\.1/,
	'the job records the transport error');

# SIGHUP: the settings are reloaded, the worker stays and keeps working.
reconfigure($node, 'hagen.max_inflight' => 8);
ok( $node->poll_query_until('postgres',
		"SELECT setting = '8' FROM pg_settings WHERE name = 'hagen.max_inflight'"),
	'the reload took effect');
is(worker_pid(), $pid, 'the dispatcher survived the reload');
my $p2 = start_project('ws-after-reload');
cmp_ok(wake_latency($p2), '<', 1.0, 'and is still woken at commit');

# SIGKILL with a request in flight: after the crash restart the job is
# taken up again from its recorded step.
$node->safe_psql('postgres', 'SELECT hagen.cancel_video(id) FROM hagen.video_project');
my $p3 = start_project('ws-kill');
$node->safe_psql('postgres', qq{
	UPDATE hagen.job SET step = 'poll', request_id = 'req-1', run_at = now(), status = 'queued',
		state = state || '{"status_url": "http://127.0.0.1:$stall_port/queue/fal-ai/kling-video/requests/req-1/status"}'
	WHERE project_id = '$p3'});
ok( $node->poll_query_until('postgres',
		"SELECT status = 'running' AND step = 'poll' FROM hagen.job WHERE project_id = '$p3'"),
	'a poll is in flight');
$pid = worker_pid();
kill 'KILL', $pid;
ok( $node->poll_query_until('postgres', qq{
		SELECT count(*) = 1 FROM pg_stat_activity
		WHERE backend_type = 'hagenkit dispatcher' AND pid <> $pid}),
	'the dispatcher is back after SIGKILL');
ok( $node->poll_query_until('postgres', qq{
		SELECT count(*) > 0 FROM hagen.job_log
		WHERE project_id = '$p3' AND message = 'worker restarted; job taken up again'}),
	'the killed job is taken up again at restart');
ok( $node->poll_query_until('postgres', qq{
		SELECT status = 'running' AND step = 'poll' AND total_attempts >= 2
		FROM hagen.job WHERE project_id = '$p3'}),
	'from its recorded step, polling the same request');

# DROP EXTENSION with work in flight returns promptly; the workers idle,
# and CREATE EXTENSION works again.
my $t0 = time;
$node->safe_psql('postgres', 'DROP EXTENSION hagenkit CASCADE');
cmp_ok(time - $t0, '<', 10, 'DROP EXTENSION does not wait for in-flight work');
$node->safe_psql('postgres', 'CREATE EXTENSION hagenkit');
my $p4 = start_project('ws-recreated');
cmp_ok(wake_latency($p4), '<', 11, 'the recreated extension is served');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'hagenkit dispatcher'"),
	'1', 'one dispatcher, still');

$node->stop;
done_testing();
