"""The photo example's client app: a user logs in with her password at the auth server, through the
public first-party client ``chit-cli``, and works with her images at the image store, which decides
on its own. It prints every request with the answer, refusals included::

    python client.py alice --upload sunset "Sunset in Porto" --peek boat

The password is read from standard input when it is not a terminal (``--password-stdin`` style),
else asked for."""

import argparse
import getpass
import os
import sys

import httpx

ISSUER = os.environ.get("CHIT_ISSUER", "http://127.0.0.1:8700")
IMAGE_STORE_URL = os.environ.get("IMAGE_STORE_URL", "http://127.0.0.1:8701")


def login(username: str, password: str) -> str:
    """Her access token, by the password grant: a first-party app, so she types her password into it."""
    response = httpx.post(
        f"{ISSUER}/oauth2/token",
        data={"grant_type": "password", "client_id": "chit-cli", "username": username, "password": password},
    )
    if response.is_error:
        sys.exit(f"{username} could not log in: {response.json().get('error_description', response.text)}")
    return str(response.json()["access_token"])


def outcome(response: httpx.Response) -> str:
    """The status, with why the image store refused when it did."""
    if response.is_success:
        return str(response.status_code)
    return f"{response.status_code} refused: {response.json().get('detail', response.text)}"


def describe(image: dict) -> str:
    tags = ", ".join(image["tags"]) or "no tags"
    where = f" at {image['location']}" if image.get("location") else ""
    by = f", tagged by {' through '.join(image['tagged_by'])}" if image["tagged_by"] else ""  # the chain
    return f"{image['id']} ({image['title']}: {tags}{where}{by})"


def main() -> None:
    parser = argparse.ArgumentParser(description="Log in as a user and work with her images.")
    parser.add_argument("username")
    parser.add_argument("--upload", nargs=2, metavar=("ID", "TITLE"), help="upload an image")
    parser.add_argument("--explicit", action="store_true", help="flag the uploaded image explicit")
    parser.add_argument("--peek", metavar="ID", help="try to read an image, someone else's for instance")
    args = parser.parse_args()
    password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass()
    token = login(args.username, password)
    print(f"{args.username} logged in at {ISSUER} through chit-cli")
    with httpx.Client(base_url=IMAGE_STORE_URL, headers={"Authorization": f"Bearer {token}"}, timeout=30) as store:
        if args.upload:
            image_id, title = args.upload
            uploaded = store.put(f"/images/{image_id}", params={"title": title, "explicit": args.explicit})
            shown = f": {describe(uploaded.json())}" if uploaded.is_success else ""
            print(f"{args.username} uploads {image_id}: {outcome(uploaded)}{shown}")
        listed = store.get("/images")
        shown = "; ".join(describe(image) for image in listed.json()) if listed.is_success else ""
        print(f"{args.username} lists the images: {outcome(listed)} {shown}".rstrip())
        if args.peek:
            peeked = store.get(f"/images/{args.peek}")
            shown = f": {describe(peeked.json())}" if peeked.is_success else ""
            print(f"{args.username} reads {args.peek}: {outcome(peeked)}{shown}")


if __name__ == "__main__":
    main()
