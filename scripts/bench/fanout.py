"""Benchmark 2 (fan-out) driver, run by scripts/bench.sh with the rig's venv python.

  fanout.py projects N            ensure projects bench-p001..N exist (Default domain); print their ids
  fanout.py image NAME            a new private image owned by proj-a (as alice); print its id
  fanout.py raw IMAGE CONCURRENCY the manual calls sent directly with one admin token: make the
                                  image shared, then one member POST per project id on stdin,
                                  CONCURRENCY at once
  fanout.py broker URL REQUESTER APPROVER IMAGE
                                  through the broker: file a request for the project ids on stdin,
                                  approve it as soon as validation passed, wait until every share
                                  is granted
  fanout.py members IMAGE         how many members the image has in Glance

Each measurement prints one `FANOUT key=value ...` line. Settings come from the rig's env.sh
and seed.env (KEYSTONE_URL, GLANCE_URL, ADMIN_PASSWORD, ALICE_PASSWORD).
"""
import concurrent.futures
import os
import sys
import threading
import time

import requests

KEYSTONE = os.environ["KEYSTONE_URL"]
GLANCE = os.environ["GLANCE_URL"]
TIMEOUT = 120


def token(user, password, project):
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": "Default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}
    r = requests.post(KEYSTONE + "/v3/auth/tokens", json=body, timeout=TIMEOUT)
    r.raise_for_status()
    return r.headers["X-Subject-Token"]


def admin_token():
    return token("admin", os.environ["ADMIN_PASSWORD"], "admin")


def projects(n):
    s = requests.Session()
    s.headers["X-Auth-Token"] = admin_token()
    ids = []
    for i in range(1, n + 1):
        name = "bench-p%03d" % i
        r = s.get(KEYSTONE + "/v3/projects", params={"name": name, "domain_id": "default"}, timeout=TIMEOUT)
        r.raise_for_status()
        found = r.json()["projects"]
        if found:
            ids.append(found[0]["id"])
            continue
        r = s.post(KEYSTONE + "/v3/projects", json={"project": {
            "name": name, "domain_id": "default", "description": "glance-share-broker benchmark"}},
            timeout=TIMEOUT)
        r.raise_for_status()
        ids.append(r.json()["project"]["id"])
    print("\n".join(ids))


def image(name):
    h = {"X-Auth-Token": token("alice", os.environ["ALICE_PASSWORD"], "proj-a")}
    r = requests.post(GLANCE + "/v2/images", headers=h, timeout=TIMEOUT, json={
        "name": name, "visibility": "private", "disk_format": "raw", "container_format": "bare"})
    r.raise_for_status()
    print(r.json()["id"])


def members(image_id):
    h = {"X-Auth-Token": admin_token(), "Accept": "application/json"}
    r = requests.get(GLANCE + "/v2/images/%s/members" % image_id, headers=h, timeout=TIMEOUT)
    r.raise_for_status()
    print(len(r.json()["members"]))


def raw(image_id, concurrency):
    ids = sys.stdin.read().split()
    tok = admin_token()
    local = threading.local()

    def session():
        if not hasattr(local, "s"):
            local.s = requests.Session()
            local.s.headers.update({"X-Auth-Token": tok, "Accept": "application/json"})
        return local.s

    def add(project_id):
        r = session().post(GLANCE + "/v2/images/%s/members" % image_id, json={"member": project_id},
                           timeout=TIMEOUT)
        return r.status_code

    t0 = time.monotonic()
    r = session().patch(GLANCE + "/v2/images/" + image_id, timeout=TIMEOUT,
                        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
                        json=[{"op": "replace", "path": "/visibility", "value": "shared"}])
    r.raise_for_status()
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        statuses = list(pool.map(add, ids))
    secs = time.monotonic() - t0
    failed = sum(1 for s in statuses if s not in (200, 201))
    print("FANOUT way=raw concurrency=%d members=%d secs=%.3f failed=%d statuses=%s" % (
        concurrency, len(ids), secs, failed, ",".join(sorted({str(s) for s in statuses}))))


def broker(url, requester, approver, image_id):
    ids = sys.stdin.read().split()
    s = requests.Session()
    auth = lambda key: {"Authorization": "Bearer " + key}
    t0 = time.monotonic()
    r = s.post(url + "/v1/share-requests", headers=auth(requester), timeout=TIMEOUT,
               json={"image_id": image_id, "targets": ids, "reason": "benchmark fan-out"})
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    while True:
        r = s.get(url + "/v1/share-requests/" + rid, headers=auth(approver), timeout=TIMEOUT)
        state = r.json()["validation"]["state"]
        if state != "pending":
            break
        time.sleep(0.01)
    assert state == "passed", r.text
    t_valid = time.monotonic() - t0
    r = s.post(url + "/v1/share-requests/%s/approve" % rid, headers=auth(approver), json={}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    t_approved = time.monotonic() - t0
    while True:
        r = s.get(url + "/v1/share-requests/" + rid, headers=auth(approver), timeout=TIMEOUT)
        states = [sh["state"] for sh in r.json()["shares"]]
        if all(st == "pending_acceptance" for st in states):
            break
        assert not any(st == "failed" for st in states), r.text
        time.sleep(0.01)
    secs = time.monotonic() - t0
    print("FANOUT way=broker members=%d secs=%.3f validated_after=%.3f approved_after=%.3f grants_secs=%.3f" % (
        len(ids), secs, t_valid, t_approved, secs - t_approved))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "projects":
        projects(int(args[0]))
    elif cmd == "image":
        image(args[0])
    elif cmd == "members":
        members(args[0])
    elif cmd == "raw":
        raw(args[0], int(args[1]))
    elif cmd == "broker":
        broker(*args)
    else:
        sys.exit(__doc__)
