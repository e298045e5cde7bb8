# One model of the grid, in one process: train (resuming from its checkpoint; a diverged run is a
# result), evaluate on the test split (ELBO, IWAE, bpd, active units, calibration), then sample
# quality (FID, precision/recall, entropy, its sample grid). One process per model, not three,
# so that interpreter start-up and imports stay a small part of the study's time.
# A change of the evaluation settings reruns this job; training then resumes from the checkpoint
# written at its last epoch, so only evaluation and sample quality are recomputed.
rule model:
    input:
        data=f"{RESULTS}/data/{config['dataset']}.json",
        net=rules.feature_net.output.net,
    output:
        model=f"{RESULTS}/runs/{{run}}/model.pt",
        history=f"{RESULTS}/runs/{{run}}/history.csv",
        facts=f"{RESULTS}/runs/{{run}}/train.json",
        metrics=f"{RESULTS}/runs/{{run}}/metrics.json",
        scores=f"{RESULTS}/runs/{{run}}/quality.json",
        figure=report(f"{RESULTS}/figures/samples/{{run}}.png", caption="../report/samples.rst",
                      category="Q5. What is a sample?", subcategory="sample grids", labels={"model": "{run}"}),
    log:
        f"{RESULTS}/logs/model/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/model/{{run}}.tsv"
    params:
        args=run_args,
        out=lambda wildcards, output: os.path.dirname(output.model),
        k=config["evaluate"]["k"],
        elbo_samples=config["evaluate"]["elbo_samples"],
        max_elements=(f"--max-elements {int(config['evaluate']['max_elements'])}"
                      if config["evaluate"]["max_elements"] else ""),
        samples=samples_flag(),
        quality_k=config["quality"]["k"],
    threads: 1
    resources:
        mem_mb=rule_resources("model", "mem_mb"),
        runtime=rule_resources("model", "runtime"),
        gpu=rule_resources("model", "gpu"),
    shell:
        "vaestudy model {params.args} --threads {threads} --out {params.out:q} "
        "--k {params.k} --elbo-samples {params.elbo_samples} {params.max_elements} "
        "--feature-net {input.net:q} {params.samples} --quality-k {params.quality_k} "
        "--figure {output.figure:q} > {log:q} 2>&1"
