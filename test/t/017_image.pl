# hagen-compile image: a photo fitted to a project's aspect ratio, checked
# pixel by pixel with the ffmpeg CLI.  EXIF orientations applied, the centre
# cut (crop) or the whole photo laid on black (pad), the longer side at most
# --max-side and the shorter at least --min-side, the JPEG at most
# --max-bytes, and bad input refused with a JSON error naming it.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../lib";
use HagenTest;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;

need_ffmpeg();

my $dir = $HagenTest::dir;
my $helper = helper_path();
ok(-x $helper, "hagen-compile is installed ($helper)");

# Runs `hagen-compile image`; returns (exit status, its JSON line as a hash).
sub image
{
	my (@args) = @_;
	my $out = `'$helper' image @args 2>/dev/null`;
	my $rc = $? >> 8;
	my ($line) = $out =~ /^(\{.*\})\s*$/m;
	return ($rc, eval { decode_json($line // '{}') } // {});
}

# The RGB of a pixel of an image file, through the ffmpeg CLI.
sub pixel
{
	my ($file, $x, $y) = @_;
	my $raw = `ffmpeg -nostdin -loglevel error -i '$file' -vf 'format=rgb24,crop=1:1:$x:$y' -f rawvideo -pix_fmt rgb24 - 2>/dev/null`;
	return length($raw) == 3 ? [unpack('C3', $raw)] : [-1, -1, -1];
}
# Is a pixel near a colour (JPEG is lossy)?
sub is_color
{
	my ($file, $x, $y, $want, $desc) = @_;
	my $got = pixel($file, $x, $y);
	my $ok = !grep { abs($got->[$_] - $want->[$_]) > 40 } 0 .. 2;
	ok($ok, $desc) or diag("pixel ($x, $y) of $file is (@$got), not (@$want)");
}
sub size_of
{
	my ($file) = @_;
	my $s = `ffprobe -v error -select_streams v -show_entries stream=width,height,codec_name,pix_fmt -of csv=p=0 '$file'`;
	chomp $s;
	return $s;
}

my ($red, $green, $blue, $black) = ([255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 0, 0]);

# A landscape photo in three bands: red | green | blue.
run("ffmpeg -loglevel error -y -f lavfi -i 'color=0x00FF00:s=1600x900' -vf "
	  . "'drawbox=x=0:y=0:w=533:h=900:color=red:t=fill,drawbox=x=1067:y=0:w=533:h=900:color=blue:t=fill'"
	  . " -frames:v 1 -q:v 2 $dir/bands.jpg");
# The same, stored without an extension, as the pipeline saves downloads.
run("cp $dir/bands.jpg $dir/bands_download");

# 1. Crop to 9:16: the centre of the photo, all green, in the project's shape.
my ($rc, $r) = image("$dir/bands_download", "$dir/crop.jpg", '--aspect', '9:16');
is($rc, 0, 'crop to 9:16 succeeds');
is(size_of("$dir/crop.jpg"), 'mjpeg,506,900,yuvj420p', 'a JPEG of 506x900: the full height of the photo, 9:16, not enlarged');
is("$r->{image}{width}x$r->{image}{height} $r->{image}{source}{width}x$r->{image}{source}{height} $r->{image}{fit} $r->{image}{aspect}",
	'506x900 1600x900 crop 9:16', 'and says so, with the size of the photo');
is_color("$dir/crop.jpg", 10, 10, $green, 'its top left is the middle of the photo');
is_color("$dir/crop.jpg", 495, 890, $green, 'so is its bottom right');

# 2. Pad to 9:16: the whole photo on a black canvas, at most 1920 high.
($rc, $r) = image("$dir/bands.jpg", "$dir/pad.jpg", '--aspect', '9:16', '--fit', 'pad');
is(size_of("$dir/pad.jpg"), 'mjpeg,1080,1920,yuvj420p', 'pad to 9:16 gives 1080x1920 (the canvas scaled to --max-side)');
is_color("$dir/pad.jpg", 540, 100, $black, 'black above the photo');
is_color("$dir/pad.jpg", 540, 1820, $black, 'black below it');
is_color("$dir/pad.jpg", 60, 960, $red, 'the whole photo in the middle: red at the left');
is_color("$dir/pad.jpg", 540, 960, $green, 'green in the middle');
is_color("$dir/pad.jpg", 1020, 960, $blue, 'blue at the right');

# 3. Sizes: --max-side scales down, --min-side up (Kling takes >= 300 px).
($rc, $r) = image("$dir/bands.jpg", "$dir/small.jpg", '--aspect', '16:9', '--max-side', '640');
is(size_of("$dir/small.jpg"), 'mjpeg,640,360,yuvj420p', '--max-side 640 gives 640x360');
run("ffmpeg -loglevel error -y -f lavfi -i 'color=green:s=160x90' -frames:v 1 $dir/tiny.png");
($rc, $r) = image("$dir/tiny.png", "$dir/tiny.jpg", '--aspect', '1:1');
is(size_of("$dir/tiny.jpg"), 'mjpeg,300,300,yuvj420p', 'a 160x90 PNG cut to 1:1 is enlarged to 300x300');
is($r->{image}{source}{format}, 'png_pipe', 'PNG is read by its content');

# 4. EXIF orientation: a photo stored sideways (blue band at its stored
# left) is turned upright before it is fitted.
run("ffmpeg -loglevel error -y -f lavfi -i 'color=red:s=400x200' -vf 'drawbox=x=0:y=0:w=100:h=200:color=blue:t=fill'"
	  . " -frames:v 1 -q:v 2 $dir/stored.jpg");
my $jpeg = slurp_file("$dir/stored.jpg");
for my $o (1, 3, 6, 8)
{
	# An APP1 segment right after SOI: Exif, big-endian TIFF, one IFD entry (0x0112).
	my $tiff = 'MM' . pack('n N n', 42, 8, 1) . pack('n n N n n', 0x0112, 3, 1, $o, 0) . pack('N', 0);
	my $exif = "Exif\0\0" . $tiff;
	open(my $fh, '>:raw', "$dir/exif$o.jpg") or die;
	print $fh substr($jpeg, 0, 2), "\xFF\xE1", pack('n', length($exif) + 2), $exif, substr($jpeg, 2);
	close $fh;
}
my %where = (1 => [50, 200, 'left'], 3 => [350, 200, 'right'], 6 => [200, 50, 'top'], 8 => [200, 350, 'bottom']);
for my $o (1, 3, 6, 8)
{
	($rc, $r) = image("$dir/exif$o.jpg", "$dir/upright$o.jpg", '--aspect', '1:1', '--fit', 'pad', '--max-side', '400');
	is($r->{image}{source}{orientation}, $o, "EXIF orientation $o is read");
	my ($x, $y, $side) = @{ $where{$o} };
	is_color("$dir/upright$o.jpg", $x, $y, $blue, "orientation $o: the blue band ends up at the $side");
}
is_color("$dir/upright6.jpg", 50, 200, $black, 'orientation 6: turned upright (portrait), black beside it');

# 5. The JPEG's size: the quality steps down until it fits --max-bytes, or
# the photo is refused.
run("ffmpeg -loglevel error -y -f lavfi -i 'testsrc2=s=1600x900' -frames:v 1 -q:v 2 $dir/busy.jpg");
my ($rc_full, $full) = image("$dir/busy.jpg", "$dir/busy_full.jpg", '--aspect', '16:9');
my $limit = int($full->{image}{bytes} / 2);
($rc, $r) = image("$dir/busy.jpg", "$dir/busy_small.jpg", '--aspect', '16:9', '--max-bytes', $limit);
ok($rc == 0 && -s "$dir/busy_small.jpg" <= $limit && $r->{image}{quality} > $full->{image}{quality},
	"with --max-bytes $limit the JPEG is " . (-s "$dir/busy_small.jpg") . " bytes at quality $r->{image}{quality} (was $full->{image}{bytes} at $full->{image}{quality})");
($rc, $r) = image("$dir/busy.jpg", "$dir/busy_none.jpg", '--aspect', '16:9', '--max-bytes', 2000);
is($rc, 1, 'a limit no quality meets fails');
like($r->{error}{message}, qr/bytes as a JPEG of 1600x900 even at the lowest quality; at most 2000 are taken/, 'saying by how much');
ok(!-e "$dir/busy_none.jpg", 'and leaves no file behind');

# 6. Bad input: each a JSON error naming what is wrong, exit status 1.
run("cp /etc/passwd $dir/passwd_download");
open(my $fh, '>', "$dir/playlist_download") or die;
print $fh "ffconcat version 1.0\nfile '/etc/passwd'\n";
close $fh;
run("head -c 3000 $dir/bands.jpg > $dir/cut_download");
my @bad = (
	[ 'a text file', ["$dir/passwd_download", "$dir/o.jpg", '--aspect', '9:16'], qr/the photo cannot be read \(passwd_download\): not a JPEG, PNG, WebP or GIF image/ ],
	[ 'a playlist posing as a photo', ["$dir/playlist_download", "$dir/o.jpg", '--aspect', '9:16'], qr/the photo cannot be read/ ],
	[ 'a JPEG cut short', ["$dir/cut_download", "$dir/o.jpg", '--aspect', '9:16'], qr/the photo cannot be (read|decoded)/ ],
	[ 'a file that is not there', ["$dir/nothing", "$dir/o.jpg", '--aspect', '9:16'], qr/the photo cannot be read \(nothing\)/ ],
	[ 'a fit that does not exist', ["$dir/bands.jpg", "$dir/o.jpg", '--aspect', '9:16', '--fit', 'stretch'], qr/--fit takes crop or pad, not "stretch"/ ],
	[ 'an aspect that is not W:H', ["$dir/bands.jpg", "$dir/o.jpg", '--aspect', 'wide'], qr/--aspect takes W:H/ ],
	[ 'no aspect', ["$dir/bands.jpg", "$dir/o.jpg"], qr/--aspect is required/ ],
	[ 'a max side of 0', ["$dir/bands.jpg", "$dir/o.jpg", '--aspect', '1:1', '--max-side', '0'], qr/--max-side takes a whole number from 16 to 8192, not "0"/ ],
	[ 'an unknown option', ["$dir/bands.jpg", "$dir/o.jpg", '--aspect', '1:1', '--sharpen', '1'], qr/unknown option "--sharpen"/ ],
);
for my $b (@bad)
{
	my ($what, $args, $want) = @$b;
	($rc, $r) = image(@$args);
	ok($rc == 1 && ($r->{error}{message} // '') =~ $want, "$what: refused with a JSON error")
	  or diag("exit $rc: " . encode_json($r));
}
ok(!-e "$dir/o.jpg", 'no output was left by any of them');

done_testing();
