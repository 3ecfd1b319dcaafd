. ./corpus/repo-helper/work.sh
base64 out/*.txt > /dev/null
