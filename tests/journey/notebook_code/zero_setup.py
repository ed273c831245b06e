"""A notebook cell with zero setup: no registry, no base image, no credentials, no kubeconfig
written by the user; the stack's PodDefault provides them."""

import json
import socket

from fnjob import fairing


def where_am_i():
    print(f"hello from {socket.gethostname()}", flush=True)
    return {"hostname": socket.gethostname(), "answer": 6 * 7}


fairing.config.set_builder("append", image_name="fairing-job", push=True)
result = fairing.config.fn(where_am_i)()
print("RESULT " + json.dumps(result))
