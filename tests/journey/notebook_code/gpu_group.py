"""A GPU job from a notebook, placed on a named GPU group from the mounted gpu-groups.json."""

import json

from fnjob import Job


class StatusLines:
    """fnjob reports a run's progress and status through a reporter; this one prints the
    status lines."""

    def progress(self, event):
        pass

    def status(self, text):
        print("status: " + text, flush=True)


def train():
    print("training on the GPU group", flush=True)
    return {"loss": 0.25}


job = Job(gpus=1, gpu_group="gpu-spot", image_name="train", reporter=StatusLines())
print("RESULT " + json.dumps(job.run(train)))
