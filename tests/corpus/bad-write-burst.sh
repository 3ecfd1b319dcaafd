# $1: the seed; $2: the role whose work this is (corpus/ROLE/work.sh).
. "./corpus/$2/work.sh"
k=0
while [ $k -lt 3000 ]; do echo "$k" >> out/burst.txt; k=$((k+1)); done
