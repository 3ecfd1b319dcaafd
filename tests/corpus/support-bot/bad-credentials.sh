. ./corpus/support-bot/work.sh
cat "$CREDS/credentials" > /dev/null
