#!/usr/bin/env bash
# Makes the media fixtures of test/compile/run.sh in the directory $1 with
# the ffmpeg CLI: small "Kling-like" clips (H.264 High, yuv420p, bt709 tags,
# 2 B-frames, AAC-LC 48 kHz stereo, moov at the END of the file, as an
# ffmpeg-based encoder writes them), music, and damaged files.
#
#   sync1..6   320x180 24 fps 2.5 s; a 1-frame white flash (frame 12) and a
#              1 kHz beep, both at 0.5 s; otherwise silent.  2.5 s of AAC
#              ends 832 samples into its last frame: a concat that keeps
#              that padding drifts 17 ms per boundary
#   tone1..3   320x180 24 fps 2 / 1.5 / 1 s; steady 330 / 440 / 550 Hz at 0.25
#   mute1..3   320x180 24 fps 2 s, no audio track
#   trans1..2  320x180 24 fps 1 s, no audio track (transition clips)
#   n30        320x180 30 fps 1.5 s; flash (frames 15-16) and beep at 0.5 s
#   n916       180x320 24 fps 1.5 s, 440 Hz     n11  240x240 24 fps 1 s, 550 Hz
#   nmono      320x180 24 fps 1.5 s, AAC 44.1 kHz MONO, 660 Hz
#   music_short.mp3 1.5 s, music_long.mp3 20 s: 880 Hz at 0.25, 44.1 kHz stereo
#   voice.m4a  audio only (no video)
#   black, white  320x180 24 fps 1 s of one colour, no audio (crossfades)
#   bad_*      damaged files (see the end)
set -euo pipefail
dir=$1
cd "$dir"

V="-c:v libx264 -profile:v high -pix_fmt yuv420p -preset faster -crf 20 -bf 2
   -colorspace bt709 -color_primaries bt709 -color_trc bt709"
A="-c:a aac -b:a 128k -ar 48000 -ac 2"
FF="ffmpeg -nostdin -v error -y"
flash="drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill"
beep() { # beep START: a 0.1 s 1 kHz beep at 0.5 full scale, stereo
	echo "aevalsrc='if(between(t\,$1\,$1+0.1)\,0.5*sin(2*PI*1000*t)\,0)|if(between(t\,$1\,$1+0.1)\,0.5*sin(2*PI*1000*t)\,0)':s=48000:d=$2"
}
tone() { # tone FREQ DUR [RATE] [mono]
	local e="0.25*sin(2*PI*$1*t)"
	[ "${4:-}" = mono ] || e="$e|$e"
	echo "aevalsrc='$e':s=${3:-48000}:d=$2"
}

pids=()
bg() { "$@" & pids+=($!); if [ ${#pids[@]} -ge 3 ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi; }

for i in 1 2 3 4 5 6; do
	bg $FF -f lavfi -i "testsrc2=s=320x180:r=24:d=2.5,hue=h=$((i * 37)),$flash:enable='eq(n\,12)'" \
		-f lavfi -i "$(beep 0.5 2.5)" $V $A -shortest sync$i.mp4
done
d=(0 2 1.5 1)
f=(0 330 440 550)
for i in 1 2 3; do
	bg $FF -f lavfi -i "testsrc2=s=320x180:r=24:d=${d[$i]},hue=h=$((i * 53))" \
		-f lavfi -i "$(tone ${f[$i]} ${d[$i]})" $V $A -shortest tone$i.mp4
	bg $FF -f lavfi -i "testsrc2=s=320x180:r=24:d=2,hue=h=$((i * 71))" $V mute$i.mp4
done
for i in 1 2; do
	bg $FF -f lavfi -i "testsrc2=s=320x180:r=24:d=1,hue=h=$((i * 97)),negate" $V trans$i.mp4
done
bg $FF -f lavfi -i "testsrc2=s=320x180:r=30:d=1.5,$flash:enable='between(n\,15\,16)'" \
	-f lavfi -i "$(beep 0.5 1.5)" $V $A -shortest n30.mp4
bg $FF -f lavfi -i "testsrc2=s=180x320:r=24:d=1.5" -f lavfi -i "$(tone 440 1.5)" $V $A -shortest n916.mp4
bg $FF -f lavfi -i "testsrc2=s=240x240:r=24:d=1" -f lavfi -i "$(tone 550 1)" $V $A -shortest n11.mp4
bg $FF -f lavfi -i "testsrc2=s=320x180:r=24:d=1.5" -f lavfi -i "$(tone 660 1.5 44100 mono)" \
	$V -c:a aac -b:a 96k -ar 44100 -ac 1 -shortest nmono.mp4
bg $FF -f lavfi -i "$(tone 880 1.5 44100)" -c:a libmp3lame -b:a 192k music_short.mp3
bg $FF -f lavfi -i "$(tone 880 20 44100)" -c:a libmp3lame -b:a 192k music_long.mp3
bg $FF -f lavfi -i "$(tone 440 2)" $A voice.m4a
for c in black white; do
	bg $FF -f lavfi -i "color=c=$c:s=320x180:r=24:d=1" $V $c.mp4
done
for p in "${pids[@]}"; do wait "$p"; done

# Damaged media, each a segment that must make the compile fail.
# bad_trunc: cut at half (the moov, at the end, is gone).
head -c $(($(stat -c %s tone1.mp4) / 2)) tone1.mp4 >bad_trunc.mp4
# bad_trunc_fs: index at the front, media cut short: the index points past the end.
$FF -i tone1.mp4 -c copy -movflags +faststart tone1_fs.mp4
head -c $(($(stat -c %s tone1_fs.mp4) * 6 / 10)) tone1_fs.mp4 >bad_trunc_fs.mp4
printf 'This is not a video, just text with a .mp4 name.\n%.0s' {1..50} >bad_text.mp4
: >bad_empty.mp4
python3 - <<'PY'
import struct
def atoms(d):
    i = 0
    while i + 8 <= len(d):
        size, kind = struct.unpack('>I4s', d[i:i + 8])
        yield i, size, kind
        if size < 8:
            break
        i += size
# bad_huge_mdat: the mdat claims 4 GB, so the moov behind it is never found.
d = bytearray(open('tone1.mp4', 'rb').read())
for i, size, kind in atoms(d):
    if kind == b'mdat':
        d[i:i + 4] = struct.pack('>I', 0xFFFFFFF0)
open('bad_huge_mdat.mp4', 'wb').write(d)
# bad_huge_samples: every video sample claims 2 GB in the index (stsz).
d = bytearray(open('tone1_fs.mp4', 'rb').read())
j = d.find(b'stsz')
count = struct.unpack('>I', d[j + 12:j + 16])[0]
for k in range(count):
    d[j + 16 + 4 * k:j + 20 + 4 * k] = struct.pack('>I', 0x7FFF0000)
open('bad_huge_samples.mp4', 'wb').write(d)
PY
