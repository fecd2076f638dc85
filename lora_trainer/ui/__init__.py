"""The webui side of Train LoRA: the tab, the HTTP API and the background job.

Only `webui.py` imports the webui (`modules.*`); everything else runs and is tested without it.
"""
