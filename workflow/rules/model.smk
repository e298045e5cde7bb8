# One job per configuration of the grid, in one process for all its seeds: for each seed, train
# (resuming from its checkpoint; a diverged run is a result), evaluate on the test split (ELBO,
# IWAE, bpd, active units, calibration), then sample quality (FID, precision/recall, entropy, its
# sample grid). One process per configuration, not three per model, so that interpreter start-up
# and imports (about 1.3 s a process) stay a small part of the study's time.
# Deleting one model's folder reruns its configuration's job: that seed trains again, the other
# seeds resume from the checkpoints of their last epoch and are only evaluated again. A change of
# the evaluation settings reruns every job the same way: evaluation and sample quality only.
rule model:
    input:
        data=f"{RESULTS}/data/{config['dataset']}.json",
        net=lambda wildcards: f"{RESULTS}/quality/feature_net/{CONFIGS[wildcards.cfg].config.arena}.pt",
    output:
        models=per_seed("model.pt"),
        histories=per_seed("history.csv"),
        facts=per_seed("train.json"),
        metrics=per_seed("metrics.json"),
        scores=per_seed("quality.json"),
        figures=[
            report(f"{RESULTS}/figures/samples/{{cfg}}/seed{seed}.png", caption="../report/samples.rst",
                   category=CATEGORY["q5"], subcategory="sample grids",
                   labels={"model": "{cfg}", "seed": str(seed)})
            for seed in SEEDS
        ],
    log:
        f"{RESULTS}/logs/model/{{cfg}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/model/{{cfg}}.tsv"
    params:
        args=config_args,
        # vaestudy model puts each seed in the place of {seed}
        out=lambda wildcards: f"{RESULTS}/runs/{wildcards.cfg}/seed{{seed}}",
        figure=lambda wildcards: f"{RESULTS}/figures/samples/{wildcards.cfg}/seed{{seed}}.png",
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
        "--figure {params.figure:q} > {log:q} 2>&1"
