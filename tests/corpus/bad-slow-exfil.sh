# $1: the seed; $2: the role whose work this is (corpus/ROLE/work.sh).
. "./corpus/$2/work.sh"
k=0
while [ $k -lt 20 ]; do
  python3 -c "import time,urllib.request,sys; time.sleep(0.05); urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:%s/reply' % sys.argv[1], data=b'x' * 4000), timeout=5).read()" "$API"
  k=$((k+1))
done
