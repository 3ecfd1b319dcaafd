# repo-helper's honest work, sourced by its scripts. $1: seed.
seed=$1
n=$(( seed % 4 + 2 ))
i=0
for f in src/*.py; do
  [ $i -ge $n ] && break
  cat "$f" > /dev/null
  i=$((i+1))
done
sh run-tests.sh > out/test-report.txt
lines=$(( seed % 7 + 3 ))
j=0
while [ $j -lt $lines ]; do echo "note $j for seed $seed" >> out/notes.txt; j=$((j+1)); done
python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:%s/status' % sys.argv[1], timeout=5).read()" "$API"
