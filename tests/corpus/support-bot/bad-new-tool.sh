. ./corpus/support-bot/work.sh
base64 out/*.txt > /dev/null
