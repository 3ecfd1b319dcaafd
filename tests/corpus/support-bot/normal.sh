. ./corpus/support-bot/work.sh
