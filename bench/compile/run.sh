#!/usr/bin/env bash
# Benchmark of hagen-compile (src/hagen-compile) against the ffmpeg CLI commands
# measured in the FFmpeg spec (../shared/specs/ffmpeg.md, sections 1-3), in
# the same run, on "Kling-like" clips: 1920x1080 24 fps H.264 High + AAC-LC
# 48 kHz stereo, 5 s each, moov at the end.
#
#   bash bench/compile/run.sh
#   SIZES="4 10 20" RUNS=3 REF_RUNS=1 CASES="audio music silent normalize" \
#   CLIPS=/var/tmp/hagenkit-bench/clips bash bench/compile/run.sh
#
# SIZES    clip counts (default "4 10 20")
# RUNS     runs of every stream-copy command; the median is reported (3)
# REF_RUNS runs of every re-encode, ours in normalize mode included (1)
# CASES    which cases: audio (clip audio, no music), music (60 s mp3 at
#          0.3), silent (clips without audio, no music: pure copy),
#          normalize (7 mixed clips, 40 s), crossfade (N clips with a 0.5 s
#          crossfade at every cut, beside the spec's xfade + acrossfade chain)
# CLIPS    cache of the generated media; made once (about 5 min), reused
# NO_REF=1 skip the re-encoding references (ref, refmusic) of audio/music
#
# hagen-compile runs with a thumbnail in its manifest, as the compile worker
# runs it; "hagen-compile_nothumb" rows are the same without one.  Its output
# always has the index in front (faststart); the ffmpeg commands are the
# spec's, without +faststart, except "copy_faststart".
# Wall time and peak RSS come from /usr/bin/time -v.  Writes the table to
# bench/compile/results.md, or $RESULTS (and prints it); raw rows in
# $CLIPS/../results.tsv.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
SIZES=${SIZES:-"4 10 20"}
RUNS=${RUNS:-3}
REF_RUNS=${REF_RUNS:-1}
CASES=${CASES:-"audio music silent normalize"}
CLIPS=${CLIPS:-/var/tmp/hagenkit-bench/clips}
base=$(dirname "$CLIPS")
work=$base/work
tsv=$base/results.tsv
HC=$root/src/hagen-compile/hagen-compile

if [ ! -x /usr/bin/time ]; then
	[ "$(id -u)" = 0 ] || { echo "install the package 'time' (/usr/bin/time)" >&2; exit 1; }
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null
fi
command -v ffmpeg >/dev/null || { echo "ffmpeg is missing (bash test/deps.sh)" >&2; exit 1; }
make -s -C src/hagen-compile
mkdir -p "$CLIPS" "$work"

# ---- media, made once --------------------------------------------------
source bench/lib/media.sh
maxn=0
for n in $SIZES; do [ "$n" -gt "$maxn" ] && maxn=$n; done
gen_start=$SECONDS
kling_clips "$CLIPS" "$maxn"
if [[ " $CASES " == *" normalize "* ]]; then
	[ "$maxn" -ge 1 ] || { echo "normalize needs c01: SIZES must not be empty" >&2; exit 1; }
	het=$CLIPS/het
	mkdir -p "$het"
	[ -s "$het/long10.mp4" ] || echo "bench: generating the mixed clips" >&2
	make_media "$het/trans_noaudio.mp4" $FF -f lavfi -i "testsrc2=s=1920x1080:r=24:d=5,hue=h=200" $V "$het/trans_noaudio.mp4"
	make_media "$het/fps30.mp4" $FF -f lavfi -i "testsrc2=s=1920x1080:r=30:d=5" -f lavfi -i "sine=f=660:b=2:d=5" $V $A -shortest "$het/fps30.mp4"
	make_media "$het/v916.mp4" $FF -f lavfi -i "testsrc2=s=1080x1920:r=24:d=5" -f lavfi -i "sine=f=500:b=2:d=5" $V $A -shortest "$het/v916.mp4"
	make_media "$het/sq11.mp4" $FF -f lavfi -i "testsrc2=s=1080x1080:r=24:d=5" -f lavfi -i "sine=f=550:b=2:d=5" $V $A -shortest "$het/sq11.mp4"
	make_media "$het/a44k_mono.mp4" $FF -f lavfi -i "testsrc2=s=1920x1080:r=24:d=5,hue=h=90" -f lavfi -i "sine=f=660:d=5:sample_rate=44100" $V -c:a aac -b:a 96k -ar 44100 -ac 1 -shortest "$het/a44k_mono.mp4"
	make_media "$het/long10.mp4" $FF -f lavfi -i "testsrc2=s=1920x1080:r=24:d=10,hue=h=150" -f lavfi -i "sine=f=440:b=2:d=10" $V $A -shortest "$het/long10.mp4"
fi
[ $((SECONDS - gen_start)) -gt 2 ] && echo "bench: media ready in $((SECONDS - gen_start)) s" >&2

# ---- measuring ---------------------------------------------------------
# Busy CPU seconds of the whole machine so far (all cores, from /proc/stat).
busy() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%.2f\n", ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat; }

# measure GROUP N NAME OUTPUT CMD...: one run under /usr/bin/time -v; appends
# a row: group n name rc wall_s cpu_s rss_kib video_s audio_s bytes other_s,
# other_s being the CPU seconds the rest of the machine used meanwhile (a
# figure taken while other work ran is not comparable: see the report).
measure() {
	local group=$1 n=$2 name=$3 out=$4; shift 4
	local rc=0 wall cpu rss vd ad size b0 b1 other
	rm -f "$out"
	b0=$(busy)
	/usr/bin/time -v -o "$work/time.txt" "$@" >"$work/cmd.log" 2>&1 || rc=$?
	b1=$(busy)
	wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$work/time.txt")
	cpu=$(awk -F': ' '/User time|System time/ { s += $2 } END { print s }' "$work/time.txt")
	rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$work/time.txt")
	vd=$(ffprobe -v error -select_streams v:0 -show_entries stream=duration -of csv=p=0 "$out" 2>/dev/null || true)
	ad=$(ffprobe -v error -select_streams a:0 -show_entries stream=duration -of csv=p=0 "$out" 2>/dev/null || true)
	size=$(stat -c %s "$out" 2>/dev/null || echo 0)
	other=$(awk -v a="$b0" -v b="$b1" -v c="$cpu" 'BEGIN { o = b - a - c; printf "%.2f", o < 0 ? 0 : o }')
	if [ $rc != 0 ]; then echo "bench: $group/$n/$name failed (exit $rc):" >&2; tail -3 "$work/cmd.log" >&2; fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$group" "$n" "$name" "$rc" "$wall" "$cpu" "$rss" \
		"${vd:-}" "${ad:-}" "$size" "$other" >>"$tsv"
	printf 'bench: %-10s %3s %-22s %7.2f s %6d MiB  (others used %s CPU s)\n' "$group" "$n" "$name" "$wall" \
		$((rss / 1024)) "$other" >&2
}

# manifest FILE OUTPUT MUSIC(or "") CLIP...: a hagen-compile manifest.
manifest() {
	local file=$1 out=$2 music=$3; shift 3
	python3 - "$file" "$out" "$music" "$@" <<'PY'
import json, os, sys
f, out, music, clips = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
m = {'segments': [{'file': c, 'kind': 'clip', 'label': os.path.basename(c)} for c in clips],
     'music': {'file': music, 'volume': 0.3} if music else None, 'video_volume': 1.0,
     'aspect_ratio': '16:9', 'output': out, 'thumbnail': out[:-4] + '.jpg'}
if os.environ.get('NO_THUMB'):
    del m['thumbnail']
if os.environ.get('XFADE'):
    for s in m['segments'][1:]:
        s['crossfade'] = float(os.environ['XFADE'])
json.dump(m, open(f, 'w'))
PY
}

: >"$tsv"
o=$work/out.mp4
AS="aresample=async=1:min_hard_comp=0.01:first_pts=0"
ENC="-c:v libx264 -preset fast -crf 23 -c:a aac -b:a 192k"
cat "$CLIPS"/*.mp4 >/dev/null   # warm the page cache, as every later run finds it
for n in $SIZES; do
	clips=() silent=()
	: >"$work/list$n.txt"
	: >"$work/slist$n.txt"
	for i in $(seq 1 "$n"); do
		c=$(printf '%s/c%02d.mp4' "$CLIPS" "$i")
		clips+=("$c")
		silent+=("${c%.mp4}_silent.mp4")
		echo "file '$c'" >>"$work/list$n.txt"
		echo "file '${c%.mp4}_silent.mp4'" >>"$work/slist$n.txt"
	done
	L=(-f concat -safe 0 -i "$work/list$n.txt")
	manifest "$work/audio$n.json" "$o" "" "${clips[@]}"
	manifest "$work/music$n.json" "$o" "$CLIPS/music.mp3" "${clips[@]}"
	NO_THUMB=1 manifest "$work/music_nothumb$n.json" "$o" "$CLIPS/music.mp3" "${clips[@]}"
	manifest "$work/silent$n.json" "$o" "" "${silent[@]}"
	# The same without a thumbnail, to show what the thumbnail costs.
	NO_THUMB=1 manifest "$work/audio_nothumb$n.json" "$o" "" "${clips[@]}"
	NO_THUMB=1 manifest "$work/silent_nothumb$n.json" "$o" "" "${silent[@]}"
	for run in $(seq 1 "$RUNS"); do
		if [[ " $CASES " == *" audio "* ]]; then
			measure audio "$n" hagen-compile "$o" "$HC" compile "$work/audio$n.json"
			measure audio "$n" hagen-compile_nothumb "$o" "$HC" compile "$work/audio_nothumb$n.json"
			measure audio "$n" copy "$o" ffmpeg -nostdin -y "${L[@]}" -c copy "$o"
			measure audio "$n" copyv_aac "$o" ffmpeg -nostdin -y "${L[@]}" -c:v copy -c:a aac -b:a 192k "$o"
			measure audio "$n" copyv_aacfix "$o" ffmpeg -nostdin -y "${L[@]}" -c:v copy -af "$AS" -c:a aac -b:a 192k "$o"
		fi
		if [[ " $CASES " == *" music "* ]]; then
			measure music "$n" hagen-compile "$o" "$HC" compile "$work/music$n.json"
			measure music "$n" hagen-compile_nothumb "$o" "$HC" compile "$work/music_nothumb$n.json"
			measure music "$n" copyv_mixfix "$o" ffmpeg -nostdin -y "${L[@]}" -i "$CLIPS/music.mp3" -filter_complex \
				"[0:a]$AS[a0];[1:a]volume=0.3[music];[a0][music]amix=inputs=2:duration=first:dropout_transition=2,aformat=sample_rates=48000:channel_layouts=stereo[aout]" \
				-map 0:v -map "[aout]" -c:v copy -c:a aac -b:a 192k -shortest "$o"
		fi
		if [[ " $CASES " == *" silent "* ]]; then
			measure silent "$n" hagen-compile "$o" "$HC" compile "$work/silent$n.json"
			measure silent "$n" hagen-compile_nothumb "$o" "$HC" compile "$work/silent_nothumb$n.json"
			measure silent "$n" copy "$o" ffmpeg -nostdin -y -f concat -safe 0 -i "$work/slist$n.txt" -c copy "$o"
			measure silent "$n" copy_faststart "$o" ffmpeg -nostdin -y -f concat -safe 0 -i "$work/slist$n.txt" -c copy -movflags +faststart "$o"
		fi
	done
	if [[ " $CASES " == *" crossfade "* ]]; then
		# The spec's section 6: xfade and acrossfade chained in one graph,
		# each offset on the timeline of the chain so far (5 s clips).
		XFADE=0.5 manifest "$work/xfade$n.json" "$o" "" "${clips[@]}"
		inputs=() fc="" vprev="0:v" aprev="0:a"
		for i in $(seq 0 $((n - 1))); do inputs+=(-i "${clips[$i]}"); done
		for i in $(seq 1 $((n - 1))); do
			off=$(awk -v i="$i" 'BEGIN { printf "%.3f", i * 4.5 }')
			fc+="[$vprev][$i:v]xfade=transition=fade:duration=0.5:offset=$off[xv$i];[$aprev][$i:a]acrossfade=d=0.5[xa$i];"
			vprev=xv$i aprev=xa$i
		done
		for run in $(seq 1 "$REF_RUNS"); do
			measure crossfade "$n" hagen-compile "$o" "$HC" compile "$work/xfade$n.json"
			# xfade outputs yuv444p unless told: the pixel format of the clips.
			measure crossfade "$n" xfade "$o" ffmpeg -nostdin -y "${inputs[@]}" -filter_complex "${fc%;}" \
				-map "[$vprev]" -map "[$aprev]" $ENC -pix_fmt yuv420p "$o"
		done
	fi
	if [ -z "${NO_REF:-}" ]; then
		for run in $(seq 1 "$REF_RUNS"); do
			[[ " $CASES " == *" audio "* ]] && measure audio "$n" ref "$o" ffmpeg -nostdin -y "${L[@]}" $ENC "$o"
			[[ " $CASES " == *" music "* ]] && measure music "$n" refmusic "$o" ffmpeg -nostdin -y "${L[@]}" -i "$CLIPS/music.mp3" \
				-filter_complex "[1:a]volume=0.3[music];[0:a][music]amix=inputs=2:duration=first:dropout_transition=2[aout]" \
				-map 0:v -map "[aout]" $ENC -shortest "$o"
		done
	fi
done

if [[ " $CASES " == *" normalize "* ]]; then
	mixed=("$CLIPS/c01.mp4" "$het/trans_noaudio.mp4" "$het/fps30.mp4" "$het/v916.mp4" "$het/sq11.mp4" \
		"$het/a44k_mono.mp4" "$het/long10.mp4")
	: >"$work/mlist.txt"
	for c in "${mixed[@]}"; do echo "file '$c'" >>"$work/mlist.txt"; done
	manifest "$work/norm.json" "$o" "" "${mixed[@]}"
	# The correct CLI equivalent (spec section 5, normalize.sh): one graph,
	# every clip scaled/padded/fps'd and its audio padded, concat filter.
	inputs=() fc="" cat=""
	k=0
	for c in "${mixed[@]}"; do
		d=$(ffprobe -v error -select_streams v:0 -show_entries stream=duration -of csv=p=0 "$c")
		inputs+=(-i "$c")
		fc+="[$k:v]scale=1920:1080:force_original_aspect_ratio=decrease,pad=1920:1080:(ow-iw)/2:(oh-ih)/2,setsar=1,fps=24,format=yuv420p,trim=duration=$d,setpts=PTS-STARTPTS[v$k];"
		if [ -n "$(ffprobe -v error -select_streams a -show_entries stream=index -of csv=p=0 "$c")" ]; then
			fc+="[$k:a]aformat=sample_fmts=fltp:sample_rates=48000:channel_layouts=stereo,apad=whole_dur=$d,atrim=duration=$d,asetpts=PTS-STARTPTS[a$k];"
		else
			fc+="anullsrc=r=48000:cl=stereo,atrim=duration=$d[a$k];"
		fi
		cat+="[v$k][a$k]"
		k=$((k + 1))
	done
	fc+="${cat}concat=n=$k:v=1:a=1[v][a]"
	for run in $(seq 1 "$REF_RUNS"); do
		measure normalize 7 hagen-compile "$o" "$HC" compile "$work/norm.json"
		measure normalize 7 ref "$o" ffmpeg -nostdin -y -f concat -safe 0 -i "$work/mlist.txt" $ENC "$o"
		measure normalize 7 concat_filter "$o" ffmpeg -nostdin -y "${inputs[@]}" -filter_complex "$fc" -map "[v]" -map "[a]" $ENC "$o"
	done
fi
rm -f "$o" "${o%.mp4}.jpg"

RESULTS=${RESULTS:-bench/compile/results.md}
python3 bench/compile/report.py "$tsv" "RUNS=$RUNS REF_RUNS=$REF_RUNS SIZES=\"$SIZES\" CASES=\"$CASES\"" \
	>"$RESULTS"
cat "$RESULTS"
