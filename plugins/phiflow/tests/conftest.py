import os

os.environ["ZOOFRAME_DISABLE_EXTERNAL_PLUGINS"] = "1"
