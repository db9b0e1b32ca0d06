"""The reference walkthrough's Glue job, in its own style: Glue's classes (GlueContext,
Job, DynamicFrame), CSV in (label in the first column, then 784 pixel columns, no header),
every feature column divided by 255, a seeded 80/20 split, CSV out under
``OUTPUT_PATH/TRAIN_PREFIX`` and ``OUTPUT_PATH/VAL_PREFIX``.

It runs unchanged as the Glue job in the cloud and, locally, through the harness's
``awsglue`` compatibility layer (``etl.runner: auto`` picks it: the script imports
``awsglue.context``)."""
import sys

from awsglue.context import GlueContext
from awsglue.dynamicframe import DynamicFrame
from awsglue.job import Job
from awsglue.utils import getResolvedOptions
from pyspark.context import SparkContext
from pyspark.sql import functions as F

args = getResolvedOptions(sys.argv, ["JOB_NAME", "SOURCE_PATH", "OUTPUT_PATH",
                                     "TRAIN_PREFIX", "VAL_PREFIX"])
sc = SparkContext.getOrCreate()
glueContext = GlueContext(sc)
spark = glueContext.spark_session
job = Job(glueContext)
job.init(args["JOB_NAME"], args)

source = glueContext.create_dynamic_frame.from_options(
    connection_type="s3", connection_options={"paths": [args["SOURCE_PATH"]]},
    format="csv", format_options={"withHeader": False})
df = source.toDF()
label, features = df.columns[0], df.columns[1:]
normalised = df.select(F.col(label).cast("int").alias("label"),
                       *[(F.col(c).cast("double") / 255.0).alias(c) for c in features])
train, validation = normalised.randomSplit([0.8, 0.2], seed=42)

for frame, prefix in ((train, args["TRAIN_PREFIX"]), (validation, args["VAL_PREFIX"])):
    glueContext.write_dynamic_frame.from_options(
        frame=DynamicFrame.fromDF(frame.coalesce(1), glueContext, prefix),
        connection_type="s3",
        connection_options={"path": args["OUTPUT_PATH"].rstrip("/") + "/" + prefix},
        format="csv", format_options={"writeHeader": False})

job.commit()
