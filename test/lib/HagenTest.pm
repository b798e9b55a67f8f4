# The toolkit of hagenkit's TAP tests (test/t/*.pl).  Every test builds its
# cluster, its servers and its sample media through these functions:
#
#   clusters  hagen_node(NAME, %o)      hagenkit preloaded, settings given as
#                                       data, started, extension created
#             pipeline_node(NAME, %o)   the same with the pipeline's defaults
#                                       (work directory, 50 ms polls)
#             reconfigure(NODE, %set)   settings changed, then a reload
#   servers   s3_server, fal_sim, xai_sim   the local S3 server and the
#                                       simulators (node); start_server for
#                                       any other node server
#             http_server(%o)           a small HTTP server for what the
#                                       simulators cannot play (redirects,
#                                       fake images, two addresses)
#             silent_port(), closed_port()  a port that accepts and never
#                                       answers; a port nobody listens on
#   media     put_photos, put_music, put_object   sample photos and music made
#                                       with ffmpeg and stored in the bucket
#   checks    need_servers(), need_ffmpeg()   skip_all when missing
#             wait_project, probe_media, helper_path
#
# Servers are stopped at the end of the test (stop_servers, or the END block
# when a test dies).  Files go to $HagenTest::dir, a fresh temporary
# directory per test.
package HagenTest;

use strict;
use warnings;

use Exporter 'import';
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(run start_server stop_server stop_servers hagen_node pipeline_node reconfigure wait_project
  probe_media helper_path need_servers need_ffmpeg s3_server fal_sim xai_sim http_server
  silent_port closed_port put_object put_photos put_music);

our $root = $ENV{HAGEN_ROOT} // '.';
# The simulators render 1280x720 by default (the demo's size); the tests'
# dozens of clips are made at 320x180, which costs a tenth of the time.
$ENV{HAGEN_SIM_VIDEO_SIZE} //= 'small';
# Made at INIT time, after PostgreSQL::Test::Utils has set up tmp_check
# (at compile time it would be a relative directory).
our $dir;
INIT { $dir = PostgreSQL::Test::Utils::tempdir(); }
my (%servers, %pipes, @sockets);
# The process that loaded this module: forked servers must not stop the
# parent's servers when they exit.
my $parent = $$;

END { kill 'TERM', keys %servers if %servers && $$ == $parent; }

# Runs a shell command; dies when it fails.
sub run
{
	my ($cmd) = @_;
	system($cmd) == 0 or die "failed: $cmd";
	return;
}

# Skips the whole test unless the npm test servers are installed.
sub need_servers
{
	plan skip_all => 'the npm test servers are not installed (run test/deps.sh)'
	  unless -d "$root/node_modules/\@20minutes/s3rver";
	return;
}

# Skips the whole test unless the ffmpeg CLI (sample media) is installed.
sub need_ffmpeg
{
	plan skip_all => 'ffmpeg is not installed' unless `which ffmpeg` =~ /ffmpeg/;
	return;
}

# ---------------------------------------------------------------- servers

# Starts a node server that prints {"listening": URL}; returns (URL, pid).
# The pipe to it is kept open: closing it would wait for the server.
sub start_server
{
	my ($name, @args) = @_;
	my $pid = open(my $out, '-|', join(' ', 'exec node', @args, "2>>$dir/$name.err"))
	  or die "cannot start $name: $!";
	$servers{$pid} = $name;
	$pipes{$pid} = $out;
	my $line = <$out> // '';
	my ($url) = $line =~ /"listening":"([^"]+)"/
	  or die "$name did not start: " . slurp_file("$dir/$name.err");
	return wantarray ? ($url, $pid) : $url;
}

sub stop_server
{
	my ($pid) = @_;
	kill 'TERM', $pid;
	waitpid($pid, 0);
	delete $servers{$pid};
	delete $pipes{$pid};
	return;
}

sub stop_servers { stop_server($_) for keys %servers; return; }

# The local S3 server (test/s3/s3server.js, verifying SigV4) with the bucket
# "videos", readable without auth like a public bucket.  %o: key, secret
# (the accepted key pair), port (default: a free one; give the old port to
# restart a stopped server where the cluster expects it), dir (where the
# objects live, default $dir/s3), args (more options, e.g. --request-log).
# Returns the URL (and the pid in list context).
sub s3_server
{
	my (%o) = @_;
	return start_server($o{name} // 's3', "--openssl-legacy-provider $root/test/s3/s3server.js",
		"--access-key $o{key} --secret $o{secret} --bucket videos --dir " . ($o{dir} // "$dir/s3"),
		($o{port} ? "--port $o{port}" : ()), $o{args} // ());
}

# The Fal.ai simulator (test/sim/fal_sim.js).  %o: key (default
# sim-id:sim-secret, what pipeline_node configures), args (more options,
# e.g. --mode deterministic).  Returns the URL (and the pid).
sub fal_sim
{
	my (%o) = @_;
	return start_server($o{name} // 'fal', "$root/test/sim/fal_sim.js", '--key ' . ($o{key} // 'sim-id:sim-secret'),
		$o{args} // (), '--workdir ' . ($o{workdir} // "$dir/fal"));
}

# The xAI simulator (test/sim/xai_sim.js).  %o: key (required), args.
sub xai_sim
{
	my (%o) = @_;
	return start_server($o{name} // 'xai', "$root/test/sim/xai_sim.js", "--key $o{key}", $o{args} // (),
		'--workdir ' . ($o{workdir} // "$dir/xai"));
}

# A small HTTP/1.1 server in a child process, for answers the simulators do
# not give.  %o:
#   addresses  loopback addresses to listen on, on one port (default 127.0.0.1)
#   handler    sub ($path, $address, $port) returning
#              ($status, {header => value}, $body)
#   log        a file that gets one line "ADDRESS PATH" per request
# It reads each request's line and headers, answers with Content-Length and
# "Connection: close", and closes.  Returns the port (and the pid).
sub http_server
{
	my (%o) = @_;
	my @addresses = @{ $o{addresses} // ['127.0.0.1'] };
	my $port = 0;
	my @listen;
	for my $a (@addresses)
	{
		my $l = IO::Socket::INET->new(LocalAddr => $a, LocalPort => $port, Listen => 64, ReuseAddr => 1)
		  or die "listen on $a:$port: $!";
		$port ||= $l->sockport;
		push @listen, $l;
	}
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		# Only _exit leaves: an exit or a die would run the END blocks the
		# child inherited, which stop the test's clusters and servers.
		$SIG{TERM} = 'DEFAULT';
		eval { serve(\%o, @listen); };
		POSIX::_exit(1);
	}
	close $_ for @listen;
	$servers{$pid} = 'http';
	return wantarray ? ($port, $pid) : $port;
}

# http_server's loop, in the child.
sub serve
{
	my ($o, @listen) = @_;
	my %o = %$o;
	my $sel = IO::Select->new(@listen);
	while (my @ready = $sel->can_read)
	{
		for my $l (@ready)
		{
			my $c = $l->accept or next;
			my $line = <$c> // '';
			while (my $h = <$c>) { last if $h =~ /^\r?\n$/; }
			my ($path) = $line =~ m{^\w+ (\S+)};
			$path //= '';
			if ($o{log})
			{
				open my $fh, '>>', $o{log} or die "$o{log}: $!";
				print $fh $c->sockhost . " $path\n";
				close $fh;
			}
			my ($status, $headers, $body) = $o{handler}->($path, $c->sockhost, $c->sockport);
			$body //= '';
			my $head = "HTTP/1.1 $status " . ({ 200 => 'OK', 302 => 'Found', 404 => 'Not Found' }->{$status} // 'Status')
			  . "\r\n";
			$head .= "$_: $headers->{$_}\r\n" for sort keys %{ $headers // {} };
			print $c $head . 'Content-Length: ' . length($body) . "\r\nConnection: close\r\n\r\n$body";
			close $c;
		}
	}
	return;
}

# A loopback port that accepts connections and never answers: requests to
# it stay in flight.  The socket lives as long as the test.
sub silent_port
{
	my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 128, ReuseAddr => 1)
	  or die "listen: $!";
	push @sockets, $s;
	return $s->sockport;
}

# A loopback port where nothing listens: requests to it fail at once.
sub closed_port
{
	my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1)
	  or die "listen: $!";
	my $port = $s->sockport;
	close $s;
	return $port;
}

# ---------------------------------------------------------------- clusters

# A started cluster with hagenkit preloaded, its workers in the postgres
# database, and the extension created there (unless create_extension => 0).
# %o:
#   fal       the Fal.ai base URL (queue at /queue, storage at /rest), with
#             fal_key (default sim-id:sim-secret)
#   xai       the xAI base URL (API at /v1), with xai_key
#   s3        the S3 endpoint (bucket "videos", public URL $s3/videos), with
#             s3_key and s3_secret
#   settings  more settings, { name => value } or [ name => value, ... ]
#             (in that order; a later one wins), written quoted
#   extra     lines appended to postgresql.conf as they are
#   install_path  the PostgreSQL installation to run (default: the one in PATH)
sub hagen_node
{
	my ($name, %o) = @_;
	my @set = ('shared_preload_libraries' => 'hagenkit', 'hagen.database' => 'postgres');
	push @set, 'hagen.fal_key' => $o{fal_key} // 'sim-id:sim-secret', 'hagen.fal_queue_url' => "$o{fal}/queue",
	  'hagen.fal_rest_url' => "$o{fal}/rest"
	  if $o{fal};
	push @set, 'hagen.xai_key' => $o{xai_key}, 'hagen.xai_url' => "$o{xai}/v1" if $o{xai};
	push @set, 'hagen.s3_endpoint' => $o{s3}, 'hagen.s3_bucket' => 'videos', 'hagen.s3_access_key_id' => $o{s3_key},
	  'hagen.s3_secret_access_key' => $o{s3_secret}, 'hagen.public_url' => "$o{s3}/videos"
	  if $o{s3};
	my $s = $o{settings} // [];
	push @set, ref $s eq 'HASH' ? map { $_ => $s->{$_} } sort keys %$s : @$s;
	my $conf = conf_lines(@set) . ($o{extra} // '');

	my $node = PostgreSQL::Test::Cluster->new($name, $o{install_path} ? (install_path => $o{install_path}) : ());
	$node->init;
	$node->append_conf('postgresql.conf', $conf);
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION hagenkit') if $o{create_extension} // 1;
	return $node;
}

# Changes settings of a running cluster (postgresql.conf, then a reload).
# Settings come as in hagen_node.  The caller waits for what it needs to see.
sub reconfigure
{
	my ($node, @set) = @_;
	$node->append_conf('postgresql.conf', conf_lines(@set));
	$node->reload;
	return;
}

# postgresql.conf lines for name => value pairs, values quoted.
sub conf_lines
{
	my (@set) = @_;
	my $conf = '';
	while (my ($k, $v) = splice(@set, 0, 2))
	{
		$conf .= "$k = '" . ($v =~ s/'/''/gr) . "'\n";
	}
	return $conf;
}

# hagen_node with what the end-to-end tests share: media in $dir/work and
# fast provider polls.  Their own settings come after these and win.
sub pipeline_node
{
	my ($name, %o) = @_;
	my $s = $o{settings} // [];
	$o{settings} = [ 'hagen.work_dir' => "$dir/work", 'hagen.poll_interval' => '50ms',
		ref $s eq 'HASH' ? map { $_ => $s->{$_} } sort keys %$s : @$s ];
	return hagen_node($name, %o);
}

# ---------------------------------------------------------------- media

# Stores a local file in the bucket at KEY with an unsigned PUT (the local
# server accepts it, like the app's own uploads); TYPE is its Content-Type
# (none when undefined).  Returns its URL.
sub put_object
{
	my ($s3, $key, $file, $type) = @_;
	run('curl -sf -X PUT ' . (defined $type ? "-H 'Content-Type: $type' " : '')
		  . "--data-binary \@$file '$s3/videos/$key' >/dev/null");
	return "$s3/videos/$key";
}

# N property photos, each a JPEG of one colour of its own (640x360, or
# %o{size}), made in $dir/photoI.jpg and stored at photos/I.jpg for I in
# 0 .. N-1.  Returns their URLs.
sub put_photos
{
	my ($s3, $n, %o) = @_;
	my $size = $o{size} // '640x360';
	my @urls;
	for my $i (0 .. $n - 1)
	{
		# 37 is prime to 200: the red channel alone differs for 200 photos.
		my $colour = sprintf('%02x%02x%02x', 30 + (40 + $i * 37) % 200, 30 + (200 - $i * 23) % 200,
			30 + (60 + $i * 53) % 200);
		run("ffmpeg -loglevel error -y -f lavfi -i 'color=c=0x$colour:s=$size' -frames:v 1 $dir/photo$i.jpg");
		push @urls, put_object($s3, "photos/$i.jpg", "$dir/photo$i.jpg", 'image/jpeg');
	}
	return @urls;
}

# A music track: SECONDS of a sine at FREQ Hz as a 96 kb/s MP3, stored at
# KEY (e.g. music/calm.mp3).  Returns its URL.
sub put_music
{
	my ($s3, $key, $seconds, $freq) = @_;
	my $file = "$dir/" . ($key =~ s{/}{_}gr);
	run("ffmpeg -loglevel error -y -f lavfi -i 'sine=f=$freq:d=$seconds:sample_rate=44100' -c:a libmp3lame -b:a 96k $file");
	return put_object($s3, $key, $file, 'audio/mpeg');
}

# ---------------------------------------------------------------- checks

# The installed hagen-compile.
sub helper_path
{
	my $bindir = `pg_config --bindir`;
	chomp $bindir;
	return "$bindir/hagen-compile";
}

# Waits until the project has ended; returns "status|error message".
sub wait_project
{
	my ($node, $p, $timeout) = @_;
	local $PostgreSQL::Test::Utils::timeout_default = $timeout // 240;
	$node->poll_query_until('postgres',
		"SELECT status IN ('completed', 'failed', 'canceled') FROM hagen.video_project WHERE id = '$p'")
	  or diag('project did not finish: ' . $node->safe_psql('postgres',
		"SELECT status || ' ' || progress::text FROM hagen.video_project WHERE id = '$p'"));
	return $node->safe_psql('postgres',
		"SELECT status || '|' || coalesce(error_message, '') FROM hagen.video_project WHERE id = '$p'");
}

# hagen-compile probe --decode of a file, as a hash ({} when it fails).
sub probe_media
{
	my ($file) = @_;
	my $helper = helper_path();
	my $out = `$helper probe '$file' --decode`;
	return eval { decode_json($out) } // {};
}

1;
