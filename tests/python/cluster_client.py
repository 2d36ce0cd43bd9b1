"""The Python `kubernetes` client (a second real client) against the hub.

Run by tests/tests/python_client.rs with the hub's admin kubeconfig as the only argument.
Creates, lists, patches, watches and deletes Clusters with CustomObjectsApi and watch.Watch,
and checks the errors a client sees. Exits non-zero on the first failed check.
"""

import queue
import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

GROUP, VERSION, PLURAL = "edgefleet.io", "v1alpha1", "clusters"
NS = "python-env"


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    api = client.CustomObjectsApi()

    api.create_cluster_custom_object(
        GROUP, VERSION, "environments",
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Environment", "metadata": {"name": NS}},
    )
    cluster = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Cluster",
        "metadata": {"name": "py-1", "labels": {"client": "python"}},
        "spec": {"kubernetesVersion": "v1.31.4", "nodePools": [{"name": "gpu", "replicas": 1}]},
    }
    created = api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, cluster)
    assert created["metadata"]["generation"] == 1, created
    assert created["metadata"]["namespace"] == NS, created

    listed = api.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, label_selector="client=python")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["py-1"], listed
    assert listed["kind"] == "ClusterList", listed
    start = listed["metadata"]["resourceVersion"]

    events = queue.Queue()
    watcher = watch.Watch()

    def follow():
        for event in watcher.stream(
            api.list_namespaced_custom_object, GROUP, VERSION, NS, PLURAL,
            resource_version=start, timeout_seconds=60,
        ):
            events.put((event["type"], event["object"]))
            if event["type"] == "DELETED":
                watcher.stop()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()

    patched = api.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "py-1", {"spec": {"paused": True}, "metadata": {"labels": {"tier": "gold"}}}
    )
    assert patched["spec"]["paused"] is True, patched
    assert patched["metadata"]["generation"] == 2, patched
    assert patched["metadata"]["labels"] == {"client": "python", "tier": "gold"}, patched

    try:
        api.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "missing")
        raise AssertionError("a missing cluster was found")
    except ApiException as e:
        assert e.status == 404, e
        assert '"reason":"NotFound"' in e.body, e.body

    try:
        bad = dict(cluster, metadata={"name": "py-bad"}, spec={"kubernetesVersion": "latest"})
        api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, bad)
        raise AssertionError("an invalid cluster was created")
    except ApiException as e:
        assert e.status == 422, e
        assert "spec.kubernetesVersion" in e.body, e.body

    api.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "py-1")
    thread.join(60)
    assert not thread.is_alive(), "the watch did not see the delete"

    seen = []
    while not events.empty():
        kind, obj = events.get()
        seen.append((kind, obj["metadata"]["name"], obj["spec"].get("paused", False)))
    assert seen == [("MODIFIED", "py-1", True), ("DELETED", "py-1", True)], seen
    print("python client: ok")


if __name__ == "__main__":
    main(sys.argv[1])
