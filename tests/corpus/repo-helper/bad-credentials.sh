. ./corpus/repo-helper/work.sh
cat "$CREDS/credentials" > /dev/null
