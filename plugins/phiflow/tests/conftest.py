import os
import warnings

os.environ["ZOOFRAME_DISABLE_EXTERNAL_PLUGINS"] = "1"
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
