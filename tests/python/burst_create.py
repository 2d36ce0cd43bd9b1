"""Creates Clusters from several threads as fast as the hub answers, printing `created <name>`
(flushed) for each create that returned 201. Stops at the first error of each thread.

Used by tests/tests/crash.rs, which SIGKILLs the hub mid-burst and then checks that every
acknowledged create survived. Arguments: kubeconfig, namespace, threads.
"""

import sys
import threading

from kubernetes import client, config

GROUP, VERSION = "edgefleet.io", "v1alpha1"


def main(kubeconfig, namespace, threads):
    config.load_kube_config(config_file=kubeconfig)
    lock = threading.Lock()

    def burst(worker):
        api = client.CustomObjectsApi()
        i = 0
        while True:
            name = f"burst-{worker}-{i}"
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Cluster", "metadata": {"name": name}}
            try:
                api.create_namespaced_custom_object(GROUP, VERSION, namespace, "clusters", body, _request_timeout=10)
            except Exception:  # the hub was killed: stop this thread
                return
            with lock:
                print(f"created {name}", flush=True)
            i += 1

    workers = [threading.Thread(target=burst, args=(w,)) for w in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
