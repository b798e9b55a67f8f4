# What the app's users expect, end to end against the simulators: the app's
# hyphenated room types and labels in the prompts Fal receives; native audio
# on Fal (Kling v2.6) and xAI, asked for explicitly, paid at its price and
# kept under the music in the final video; models taken from
# hagen.video_model (the simulator refuses a field a model does not take, as
# Fal does); a project deleted by its tenant, objects and all; a budget
# refusing a run before anything reaches the provider.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../lib";
use HagenTest;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

need_servers();
need_ffmpeg();
my $dir = $HagenTest::dir;

my $s3 = s3_server(key => 'app-key', secret => 'app-secret');
my $fal = fal_sim();
my $xai = xai_sim(key => 'xai-app-key');

# Landscape listing photos (detailed, so that a frame full of photo and one
# with bars differ), and music that is a 1 kHz tone: the clips' room tone
# (brown noise under 300 Hz) and the music can be told apart by band.
for my $i (0 .. 4)
{
	run("ffmpeg -loglevel error -y -f lavfi -i 'testsrc2=s=640x360:d=1' -frames:v 1 -vf 'hue=h=" . ($i * 70)
		  . "' $dir/photo$i.jpg");
	put_object($s3, "photos/$i.jpg", "$dir/photo$i.jpg", 'image/jpeg');
}
put_music($s3, 'music/tone.mp3', 40, 1000);

my $node = pipeline_node('app_users', fal => $fal, xai => $xai, xai_key => 'xai-app-key', s3 => $s3,
	s3_key => 'app-key', s3_secret => 'app-secret', extra => "hagen.compile_workers = 1\n");

sub sql { my ($q, %o) = @_; return $node->safe_psql('postgres', $q, %o); }

sub sim
{
	my ($base, $path, $json) = @_;
	return $json
	  ? `curl -sf -X POST -H 'content-type: application/json' -d '$json' $base/_sim/$path`
	  : `curl -sf '$base/_sim/$path'`;
}

# The simulator's ledger entries (accepted paid submits) from the nth on.
sub ledger_from
{
	my ($base, $n) = @_;
	my @all = @{ decode_json(sim($base, 'ledger')) };
	return @all[$n .. $#all];
}
sub ledger_count { my ($base) = @_; return scalar @{ decode_json(sim($base, 'ledger')) }; }

sub wait_done
{
	my ($p, $timeout) = @_;
	return wait_project($node, $p, $timeout // 180);
}

sub final_file
{
	my ($p, $name) = @_;
	my $url = sql("SELECT final_video_url FROM hagen.video_project WHERE id = '$p'");
	system("curl -sf '$url' -o $dir/$name.mp4") == 0 or return undef;
	return "$dir/$name.mp4";
}

# Mean loudness (dBFS) of a file's audio through an ffmpeg filter chain.
sub loudness
{
	my ($file, $filter) = @_;
	my $out = `ffmpeg -nostdin -hide_banner -i '$file' -vn -af '$filter,volumedetect' -f null - 2>&1`;
	return $out =~ /mean_volume:\s*(-?[\d.]+|-inf) dB/ ? ($1 eq '-inf' ? -200 : $1 + 0) : undef;
}
my $low = 'lowpass=f=150,lowpass=f=150';			# the room tone; the 1 kHz music 60 dB down
my $tone = 'bandpass=f=1000:width_type=h:w=100';	# the music

my $track = sql(qq{SELECT hagen.add_music_track('Tone', '$s3/videos/music/tone.mp3', 'calm', 'serene',
	workspace_id => 'ws-app')});

# A project of the photos with the app's room types and labels.
sub app_project
{
	my (%o) = @_;
	my $ws = $o{workspace} // 'ws-app';
	my $p = sql(qq{SELECT hagen.create_project('$ws', provider => '@{[ $o{provider} // 'fal' ]}',
		generate_native_audio => @{[ $o{audio} ? 'true' : 'false' ]},
		music_track_id => @{[ $o{music} ? "'$track'" : 'NULL' ]}, music_volume => 0.3)}, %{ $o{as} // {} });
	my @rooms = (['living-room', 'Sunny lounge', 'seamless'], ['kitchen', undef, 'cut'],
		['walk_in_closet', undef, 'cut'], ["Children''s Room", 'Nursery', 'cut']);
	for my $i (0 .. ($o{clips} // 4) - 1)
	{
		my ($type, $label, $tr) = @{ $rooms[$i] };
		sql(qq{SELECT hagen.add_clip('$p', '$s3/videos/photos/$i.jpg', room_type => '$type',
			room_label => @{[ defined $label ? "'$label'" : 'NULL' ]}, transition_type => '$tr')}, %{ $o{as} // {} });
	}
	return $p;
}

# 1. Fal, Kling v2.6, native audio on, music on: the app's rooms and labels
# in the prompts, sound asked for on every clip (not on the transition),
# paid at 14 cents a second, and the clips' sound under the music.
my $before = ledger_count($fal);
my $p_on = app_project(audio => 1, music => 1);
sql("SELECT hagen.start_video('$p_on')");
is(wait_done($p_on), 'completed|', 'a Fal project with native audio and music completes');
my @paid = ledger_from($fal, $before);
my @clips = grep { $_->{input}{prompt} !~ /^Seamless/ } @paid;
my ($transition) = grep { $_->{input}{prompt} =~ /^Seamless/ } @paid;
is(scalar(@clips), 4, 'four clips were paid for');
ok((!grep { $_->{input}{generate_audio} ne JSON::PP::true } @clips) && $transition
	  && $transition->{input}{generate_audio} eq JSON::PP::false,
	'each clip asked for sound (generate_audio true), the transition for none');
my $prompts = join "\n", map { $_->{input}{prompt} } @clips;
like($prompts, qr/the living room with its seating area and windows, the Sunny lounge\./, 'living-room: its prompt with its label');
like($prompts, qr/the kitchen with its island/, 'kitchen: its own prompt');
like($prompts, qr/the walk-in closet with its shelving/, 'walk_in_closet (snake_case) is the walk-in closet');
like($prompts, qr/the children's room with its bed, toys and playful colours, the Nursery/, "Children's Room is childrens-room, with its label");
# (The simulator's log clips long strings: the end of a prompt is read from
# the job, whose state the request body is built from.)
like(sql("SELECT string_agg(state ->> 'prompt', E'\\n') FROM hagen.job WHERE project_id = '$p_on' AND kind = 'clip'"),
	qr/Sound: a faint kitchen hum, in a serene mood that suits calm music; no speech, no music\./,
	"native audio asks for the room's ambience in the music's mood");
like($transition->{input}{prompt}, qr/out of the Sunny lounge, moving slowly forward towards the kitchen/,
	'the transition prompt names where it goes');
is(join(',', map { $_->{cents} } @clips), '70,70,70,70', 'each 5 s clip with sound cost 14 cents a second');
my ($est, $cost) = split /\|/, sql("SELECT estimated_cost_cents || '|' || actual_cost_cents FROM hagen.video_project WHERE id = '$p_on'");
my $charged = 0;
$charged += $_->{cents} for @paid;
is("$est|$cost", "$charged|$charged", "estimated and actual cost are what Fal charged ($charged cents)");
my $f_on = final_file($p_on, 'fal_audio');
my $pr = probe_media($f_on);
ok(abs(($pr->{decoded}{video_end} // 0) - 25) <= 1 / 24, 'the video is 4 clips and a transition long');

# 2. The same without native audio: no sound asked, 7 cents a second, and
# under the music nothing but silence.
$before = ledger_count($fal);
my $p_off = app_project(audio => 0, music => 1);
sql("SELECT hagen.start_video('$p_off')");
is(wait_done($p_off), 'completed|', 'the same project without native audio completes');
@paid = ledger_from($fal, $before);
ok(@paid == 5 && !(grep { $_->{input}{generate_audio} ne JSON::PP::false } @paid),
	'every request said generate_audio false (v2.6 makes sound unless told not to)');
is(join(',', sort map { $_->{cents} } @paid), '35,35,35,35,35', 'and each 5 s cost 7 cents a second');
my $f_off = final_file($p_off, 'fal_silent');
my ($low_on, $low_off) = (loudness($f_on, $low), loudness($f_off, $low));
my ($tone_on, $tone_off) = (loudness($f_on, $tone), loudness($f_off, $tone));
note("room-tone band: $low_on dB with native audio, $low_off dB without; music band: $tone_on dB, $tone_off dB");
ok($low_on > -70 && $low_on - $low_off > 15, "the clips' sound is in the final video ($low_on dB against $low_off dB below 150 Hz)");
ok(abs($tone_on - $tone_off) < 3 && $tone_on > -45, "under the music, which is as loud with it as without ($tone_on, $tone_off dB at 1 kHz)");

# 3. xAI: generate_audio sent both ways (xAI makes sound by default), the
# sound kept under the music, the cost what xAI charged.
$before = ledger_count($xai);
my $x_on = app_project(provider => 'xai', audio => 1, music => 1, clips => 2);
my $x_off = app_project(provider => 'xai', audio => 0, music => 1, clips => 2);
sql("SELECT hagen.start_video('$x_on')");
sql("SELECT hagen.start_video('$x_off')");
is(wait_done($x_on) . ' ' . wait_done($x_off), 'completed| completed|', 'xAI projects with and without native audio complete');
@paid = ledger_from($xai, $before);
my %asked;
push @{ $asked{ $_->{input}{prompt} =~ /^Seamless/ ? 'transition' : $_->{input}{prompt} =~ /Sound:/ ? 'on' : 'off' } },
  $_->{input}{generate_audio} ? 'true' : 'false' for @paid;
is(join(' ', map { "$_=" . join(',', @{ $asked{$_} }) } sort keys %asked), 'off=false,false on=true,true transition=false,false',
	'xAI was asked for sound on the clips with native audio only');
for my $x ([$x_on, 'on'], [$x_off, 'off'])
{
	my ($p, $what) = @$x;
	my @mine = grep { my $e = $_; grep { $e->{request_id} eq $_ } split /\n/, sql(
		"SELECT request_id FROM hagen.job WHERE project_id = '$p' AND request_id IS NOT NULL") } @paid;
	my $sum = 0;
	$sum += $_->{cents} for @mine;
	is(sql("SELECT actual_cost_cents FROM hagen.video_project WHERE id = '$p'"), $sum,
		"xAI project with sound $what: its cost is what xAI charged ($sum cents)");
}
my ($xl_on, $xl_off) = (loudness(final_file($x_on, 'xai_audio'), $low), loudness(final_file($x_off, 'xai_silent'), $low));
ok($xl_on > -70 && $xl_on - $xl_off > 15, "xAI's sound is under the music ($xl_on dB against $xl_off dB below 150 Hz)");

# 4. Models as data: Kling v2.5-turbo takes image_url / tail_image_url /
# cfg_scale and no generate_audio; the simulator refuses any other field
# with Fal's 422, so a project completing means each request was right.
sql("ALTER SYSTEM SET hagen.fal_video_model = 'fal-ai/kling-video/v2.5-turbo/pro/image-to-video'");
sql('SELECT pg_reload_conf()');
$node->poll_query_until('postgres', "SELECT current_setting('hagen.fal_video_model') LIKE '%v2.5-turbo%'");
$before = ledger_count($fal);
my $p25 = app_project(clips => 2);
is(sql("SELECT hagen.start_video('$p25') ->> 'estimated_cost_cents'"), 105, 'v2.5-turbo: two clips and a transition estimated at 7 cents a second');
is(wait_done($p25), 'completed|', 'a Kling v2.5-turbo project completes (no field the model does not take)');
@paid = ledger_from($fal, $before);
is(join(' ', sort keys %{ $paid[0]{input} }), 'cfg_scale duration image_url negative_prompt prompt tail_image_url',
	'and its requests carry exactly its fields');
# A native-audio project on a silent model is refused before anything is sent.
my $p25a = app_project(clips => 1, audio => 1);
like((eval { sql("SELECT hagen.start_video('$p25a')"); 1 } ? '' : $@), qr/makes no sound/,
	'native audio on a silent model is refused at start');
# A row that names a field the model does not take: Fal's 422 names it.
sql(q{UPDATE hagen.video_model SET audio_field = 'generate_audio', cents_per_second_audio = 7
	WHERE model = 'fal-ai/kling-video/v2.5-turbo/pro/image-to-video'});
my $pbad = app_project(clips => 1);
sql("SELECT hagen.start_video('$pbad')");
like(wait_done($pbad), qr/^failed\|.*generate_audio.*Extra inputs are not permitted|^failed\|.*extra_forbidden/s,
	'a field the model does not take fails the clip with Fal\'s 422, naming it');
sql(q{UPDATE hagen.video_model SET audio_field = NULL, cents_per_second_audio = NULL
	WHERE model = 'fal-ai/kling-video/v2.5-turbo/pro/image-to-video'});
# A model with no row is refused, naming it.
sql("ALTER SYSTEM SET hagen.fal_video_model = 'fal-ai/kling-video/o3/pro/image-to-video'");
sql('SELECT pg_reload_conf()');
$node->poll_query_until('postgres', "SELECT current_setting('hagen.fal_video_model') LIKE '%o3%'");
$before = ledger_count($fal);
my $po3 = app_project(clips => 1);
like((eval { sql("SELECT hagen.start_video('$po3')"); 1 } ? '' : $@),
	qr{model "fal-ai/kling-video/o3/pro/image-to-video" of provider "fal" has no row in hagen.video_model},
	'a model with no row is refused, named');
is(ledger_count($fal), $before, 'and nothing reached Fal');
sql('ALTER SYSTEM RESET hagen.fal_video_model');
sql('SELECT pg_reload_conf()');
$node->poll_query_until('postgres', "SELECT current_setting('hagen.fal_video_model') LIKE '%v2.6%'");

# 5. A budget: a workspace with 100 cents a day is refused a run of 105,
# nothing reaches Fal, and the error says why.
sql("INSERT INTO hagen.workspace_budget VALUES ('ws-budget', 100)");
$before = ledger_count($fal);
my $pb = app_project(workspace => 'ws-budget', clips => 2);
my $err = eval { sql("SELECT hagen.start_video('$pb')"); '' } // $@;
like($err, qr/estimated at 105 cents; workspace "ws-budget" has spent 0 of its 100 cents today/, 'a run over the daily budget is refused, with the figures');
is(sql("SELECT status FROM hagen.video_project WHERE id = '$pb'") . ' ' . ledger_count($fal), "pending $before",
	'nothing was queued, nothing reached Fal');

# 6. A tenant deletes its project: the rows go and so does every object it
# stored; another tenant cannot.
sql(q{CREATE ROLE tenant_a LOGIN IN ROLE hagen_user; CREATE ROLE tenant_b LOGIN IN ROLE hagen_user;
	INSERT INTO hagen.workspace_role VALUES ('ws-tenant', 'tenant_a'), ('ws-other', 'tenant_b')});
my %as_a = (as => { extra_params => ['-U', 'tenant_a'] });
my $pt = app_project(workspace => 'ws-tenant', clips => 2, %as_a);
sql("SELECT hagen.start_video('$pt')", extra_params => ['-U', 'tenant_a']);
is(wait_done($pt), 'completed|', "a tenant's project completes");
sub keys_under
{
	my ($prefix) = @_;
	my $xml = `curl -sf '$s3/videos?list-type=2&prefix=$prefix'`;
	return scalar(() = $xml =~ m{<Key>}g);
}
my $stored = keys_under("ws-tenant/videos/$pt/");
ok($stored >= 4, "it stored its clips, transition, video and thumbnail ($stored objects)");
my ($rc, $out, $stderr) = $node->psql('postgres', "SELECT hagen.delete_project('$pt')", extra_params => ['-U', 'tenant_b']);
like($stderr, qr/permission denied for workspace "ws-tenant"/, 'another tenant may not delete it');
is(sql("SELECT hagen.delete_project('$pt') ->> 'deleted'", extra_params => ['-U', 'tenant_a']), 'true', 'its tenant deletes it');
is(sql("SELECT count(*) FROM hagen.video_project WHERE id = '$pt'") . '/' . sql("SELECT count(*) FROM hagen.video_clip WHERE project_id = '$pt'"),
	'0/0', 'its rows are gone');
{
	local $PostgreSQL::Test::Utils::timeout_default = 60;
	my $t0 = time;
	sleep 1 while keys_under("ws-tenant/videos/$pt/") > 0 && time - $t0 < 60;
}
is(keys_under("ws-tenant/videos/$pt/"), 0, 'and so is every object it stored');
is(keys_under("ws-app/videos/$p_on/"), 4 + 1 + 3, "another project's objects are untouched (4 clips, a transition, the video, its thumbnail, the music)");

# 7. Framing: 9:16 projects of landscape photos.  Kling and xAI answer in
# the shape of the photo they are given, so the photos are fitted to 9:16
# first (crop, the default): the clips and the video come out vertical and
# full frame.  Sent as they are (framing none), the clips are landscape.
sub frame_project
{
	my ($provider, $framing) = @_;
	my $p = sql(qq{SELECT hagen.create_project('ws-frame', '9:16', '$provider', framing => '$framing')});
	sql(qq{SELECT hagen.add_clip('$p', '$s3/videos/photos/$_.jpg', room_type => 'kitchen',
		transition_type => '@{[ $_ == 0 ? 'seamless' : 'cut' ]}')}) for 0 .. 1;
	sql("SELECT hagen.start_video('$p')");
	return $p;
}
sub dims { my ($f) = @_; my $pr = probe_media($f); my ($v) = grep { $_->{type} eq 'video' } @{ $pr->{streams} // [] };
	return $v ? ($v->{width}, $v->{height}) : (0, 0); }
# The mean luma (0-255) of the top tenth of a video's frame at 2 s.
sub top_luma
{
	my ($f) = @_;
	my $raw = `ffmpeg -nostdin -loglevel error -ss 2 -i '$f' -frames:v 1 -vf 'crop=iw:ih/10:0:0,format=gray' -f rawvideo - 2>/dev/null`;
	return -1 unless length $raw;
	my $sum = 0;
	$sum += $_ for unpack('C*', $raw);
	return $sum / length($raw);
}
$before = ledger_count($fal);
my $pf_crop = frame_project('fal', 'crop');
my $pf_none = frame_project('fal', 'none');
my $px_crop = frame_project('xai', 'crop');
is(join(' ', map { wait_done($_) } $pf_crop, $pf_none, $px_crop), 'completed| completed| completed|',
	'9:16 projects of landscape photos complete on Fal (crop and none) and xAI (crop)');
# What Fal was given: the fitted photos, JPEGs of 9:16.
@paid = ledger_from($fal, $before);
my %by_project;
for my $e (@paid)
{
	for my $p ($pf_crop, $pf_none)
	{
		push @{ $by_project{$p} }, $e if sql("SELECT count(*) FROM hagen.job WHERE project_id = '$p' AND request_id = '$e->{request_id}'");
	}
}
my $img = $by_project{$pf_crop}[0]{input}{start_image_url};
system("curl -sf '$img' -o $dir/fitted.jpg") == 0 or diag("could not fetch $img");
my ($iw, $ih) = dims("$dir/fitted.jpg");
ok($img =~ /\.jpg$/ && $ih > 0 && abs($iw / $ih - 9 / 16) < 0.01, "Fal was given the photo fitted to 9:16 (${iw}x$ih, was 640x360)");
for my $c ([$pf_crop, 'crop', 1], [$px_crop, 'crop on xAI', 1], [$pf_none, 'none', 0])
{
	my ($p, $what, $vertical) = @$c;
	my $clip = sql("SELECT clip_url FROM hagen.video_clip WHERE project_id = '$p' AND sequence_order = 0");
	system("curl -sf '$clip' -o $dir/clip_$p.mp4") == 0 or diag("could not fetch $clip");
	my ($cw, $ch) = dims("$dir/clip_$p.mp4");
	if ($vertical)
	{
		ok($ch > $cw && abs($cw / $ch - 9 / 16) < 0.02, "framing $what: the provider made a vertical clip (${cw}x$ch)");
	}
	else
	{
		ok($cw > $ch, "framing none: the provider made a landscape clip from the landscape photo (${cw}x$ch)");
	}
}
my $final = final_file($pf_crop, 'vertical');
my ($fw, $fh) = dims($final);
my $luma = top_luma($final);
ok($fh > $fw && abs($fw / $fh - 9 / 16) < 0.02 && $luma > 30,
	sprintf('the video is vertical, %dx%d, and full frame (top tenth at luma %.0f, not black)', $fw, $fh, $luma));
# xAI was given a presigned URL of the fitted photo in the bucket, which is
# deleted with the project.
my @xai_inputs = map { $_->{input}{image}{url} // '' } ledger_from($xai, 0);
ok((grep { m{/ws-frame/videos/\Q$px_crop\E/image_\d+_\d\.jpg\?X-Amz-Algorithm=AWS4-HMAC-SHA256&.*X-Amz-Signature=} } @xai_inputs) >= 2,
	'xAI was given presigned URLs of the fitted photos, stored beside the clips');
my @images = grep { /image_\d+_\d\.jpg$/ } do { my $xml = `curl -sf '$s3/videos?list-type=2&prefix=ws-frame/videos/$px_crop/'`; $xml =~ m{<Key>([^<]+)</Key>}g };
is(scalar(@images), 3, 'the bucket holds the fitted photos of its two clips and transition (3)');
sql("SELECT hagen.delete_project('$px_crop')");
{
	my $t0 = time;
	sleep 1 while keys_under("ws-frame/videos/$px_crop/") > 0 && time - $t0 < 60;
}
is(keys_under("ws-frame/videos/$px_crop/"), 0, 'deleting the project deletes them with its videos');

# No secret in the server's log of the whole run.
my $server_log = slurp_file($node->logfile);
unlike($server_log, qr/\Q$_\E/, "the server log never contains the secret $_") for qw(sim-secret app-secret xai-app-key);

$node->stop;
stop_servers();
done_testing();
