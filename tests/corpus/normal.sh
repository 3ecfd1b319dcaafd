# $1: the seed; $2: the role whose work this is (corpus/ROLE/work.sh).
. "./corpus/$2/work.sh"
