# Shared by the bench scripts (sourced, not run).

# A free TCP port on 127.0.0.1 (PYTHON, default python3, asks the kernel for one).
port() { "${PYTHON:-python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
