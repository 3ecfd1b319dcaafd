. ./corpus/support-bot/work.sh
k=0
while [ $k -lt 3000 ]; do echo "$k" >> out/burst.txt; k=$((k+1)); done
