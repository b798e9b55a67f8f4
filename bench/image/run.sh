#!/usr/bin/env bash
# Fitting a photo to an aspect ratio: `hagen-compile image` beside the ffmpeg
# CLI doing the same work (centre crop to 9:16, Lanczos scale to at most 1920
# on the longer side, JPEG at qscale 2), on the same photos.
#
#   bash bench/image/run.sh [ROUNDS]       # default 5 rounds per photo and tool
#
# Prints one row per photo and tool: median wall time, peak RSS (from
# /usr/bin/time), the output's size and bytes.  Uses the installed helper
# ($(pg_config --bindir)/hagen-compile).
set -euo pipefail
rounds=${1:-5}
helper=$(${PG_CONFIG:-pg_config} --bindir)/hagen-compile
[ -x "$helper" ] || { echo "no hagen-compile at $helper (make install first)" >&2; exit 1; }
tmp=$(mktemp -d /tmp/hagen-bench-image.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# Photos: a listing photo as cameras make them (12 MP, 4000x3000), a web
# listing's (1600x900), a small one (640x360, PNG).
ffmpeg -loglevel error -y -f lavfi -i 'testsrc2=s=4000x3000' -frames:v 1 -q:v 2 "$tmp/camera_12mp.jpg"
ffmpeg -loglevel error -y -f lavfi -i 'testsrc2=s=1600x900' -frames:v 1 -q:v 2 "$tmp/web_1600.jpg"
ffmpeg -loglevel error -y -f lavfi -i 'testsrc2=s=640x360' -frames:v 1 "$tmp/small_640.png"

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

printf '%-16s %-14s %10s %10s %12s %10s\n' photo tool 'median s' 'peak MB' size bytes
for photo in camera_12mp.jpg web_1600.jpg small_640.png; do
	in="$tmp/$photo"
	read -r w h < <(ffprobe -v error -select_streams v -show_entries stream=width,height -of csv=p=0 "$in" | tr , ' ')
	# The reference: the same crop and scale with the ffmpeg CLI (9:16 of a
	# landscape photo: the full height, the centre of the width).
	cw=$(( (h * 9 / 16) / 2 * 2 ))
	oh=$(( h > 1920 ? 1920 : h )); ow=$(( (oh * 9 / 16) / 2 * 2 ))
	for tool in hagen-compile ffmpeg; do
		: > "$tmp/times"; : > "$tmp/rss"
		for _ in $(seq "$rounds"); do
			if [ "$tool" = hagen-compile ]; then
				/usr/bin/time -f '%e %M' -o "$tmp/t" "$helper" image "$in" "$tmp/out.jpg" --aspect 9:16 >/dev/null
			else
				/usr/bin/time -f '%e %M' -o "$tmp/t" ffmpeg -nostdin -loglevel error -y -threads 1 -i "$in" \
					-vf "crop=$cw:$h,scale=$ow:$oh:flags=lanczos" -q:v 2 -frames:v 1 "$tmp/out.jpg"
			fi
			awk '{print $1}' "$tmp/t" >> "$tmp/times"
			awk '{print $2}' "$tmp/t" >> "$tmp/rss"
		done
		size=$(ffprobe -v error -select_streams v -show_entries stream=width,height -of csv=p=0:s=x "$tmp/out.jpg")
		printf '%-16s %-14s %10s %10s %12s %10s\n' "$photo" "$tool" "$(median < "$tmp/times")" \
			"$(( $(sort -n "$tmp/rss" | tail -1) / 1024 ))" "$size" "$(stat -c %s "$tmp/out.jpg")"
	done
done
