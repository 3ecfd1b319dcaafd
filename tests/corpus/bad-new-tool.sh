# $1: the seed; $2: the role whose work this is (corpus/ROLE/work.sh).
. "./corpus/$2/work.sh"
base64 /etc/hostname > /dev/null
# Then more of the usual (time for on_deviation = "kill" to act).
python3 -c "import time; time.sleep(2)"
