. ./corpus/repo-helper/work.sh
