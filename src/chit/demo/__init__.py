"""``chit demo``: the auth server and every example service of ``examples/`` (the photo platform and the
shop) started on the embedded defaults, provisioned, and walked through request by request.

``processes`` starts and stops what runs, ``provision`` creates the users, services and keys, and
``walkthrough`` holds the scripted requests with the decision each one expects."""
