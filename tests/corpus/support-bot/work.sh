# support-bot's honest work, sourced by its scripts. $1: seed.
seed=$1
n=$(( seed % 3 + 1 ))
i=0
for t in tickets/*.txt; do
  [ $i -ge $n ] && break
  reply="out/reply-$i.txt"
  wc -w "$t" > "$reply"
  echo "Thanks for writing, seed $seed" >> "$reply"
  python3 -c "import urllib.request,sys; urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:%s/reply' % sys.argv[1], data=open(sys.argv[2],'rb').read()), timeout=5).read()" "$API" "$reply"
  i=$((i+1))
done
