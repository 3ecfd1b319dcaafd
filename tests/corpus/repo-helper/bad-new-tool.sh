. ./corpus/repo-helper/work.sh
base64 /etc/hostname > /dev/null
# Then more of the usual (time for on_deviation = "kill" to act).
python3 -c "import time; time.sleep(2)"
