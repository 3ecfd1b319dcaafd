# $1: the seed; $2: the role whose work this is (corpus/ROLE/work.sh).
. "./corpus/$2/work.sh"
python3 -c "import socket,sys; socket.create_connection(('127.0.0.2', int(sys.argv[1])), timeout=5).close()" "$OTHER" || true
