# Kling-like media for the benchmarks, made once with the ffmpeg CLI and kept
# in a cache: 1920x1080 24 fps H.264 High + AAC-LC 48 kHz stereo, 5 s each,
# moov at the end, like Kling's output; and a 60 s MP3 for music.
#
#   source bench/lib/media.sh
#   kling_clips DIR N     # DIR/c01.mp4 .. cNN.mp4 (and cNN_silent.mp4), DIR/music.mp3

V="-c:v libx264 -profile:v high -pix_fmt yuv420p -preset faster -crf 20 -colorspace bt709 -color_primaries bt709 -color_trc bt709"
A="-c:a aac -b:a 128k -ar 48000 -ac 2"
FF="ffmpeg -nostdin -v error -y"

# make_media OUT CMD...: runs CMD (whose last argument is OUT) into a
# temporary name, so an interrupted run never leaves a half file in the cache.
make_media() {
	local out=$1; shift
	[ -s "$out" ] && return 0
	local tmp="${out%.*}.part.${out##*.}"
	"${@:1:$#-1}" "$tmp" && mv "$tmp" "$out"
}

kling_clips() {
	local dir=$1 n=$2 i c src
	mkdir -p "$dir"
	for i in $(seq 1 "$n"); do
		c=$(printf '%s/c%02d.mp4' "$dir" "$i")
		if [ $((i % 2)) = 1 ]; then src="testsrc2=s=1920x1080:r=24:d=5,hue=h=$((i * 37))"
		else src="mandelbrot=s=1920x1080:r=24:start_x=-0.74$((i * 3)):start_y=0.1$((i * 7)),trim=duration=5,hue=h=$((i * 29))"; fi
		[ -s "$c" ] || echo "bench: generating $(basename "$c")" >&2
		make_media "$c" $FF -f lavfi -i "$src" -f lavfi -i "sine=f=$((200 + i * 20)):b=2:d=5" $V $A -shortest "$c"
		make_media "${c%.mp4}_silent.mp4" $FF -i "$c" -map 0:v -c copy "${c%.mp4}_silent.mp4"
	done
	make_media "$dir/music.mp3" $FF -f lavfi \
		-i "aevalsrc='0.2*sin(2*PI*220*t)+0.1*sin(2*PI*330*t)+0.05*sin(2*PI*440*t)':s=44100:d=60" \
		-ac 2 -c:a libmp3lame -b:a 192k "$dir/music.mp3"
}
