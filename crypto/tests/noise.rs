//! The noise samplers have the distributions they claim: fixed seeds, enough samples
//! that the tolerances are several standard errors wide, and the two's-complement
//! wrapping a masked sum relies on.

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use xmcredit_crypto::noise::{skellam_epsilon, skellam_tail_bound, DiscreteLaplace, Skellam, MAX_VARIANCE};
use xmcredit_crypto::CryptoError;

const SAMPLES: usize = 40_000;

/// Sample mean and (unbiased) variance.
fn moments(samples: &[i64]) -> (f64, f64) {
    let n = samples.len() as f64;
    let mean = samples.iter().map(|&x| x as f64).sum::<f64>() / n;
    let variance = samples.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, variance)
}

fn assert_moments(samples: &[i64], variance: f64, what: &str) {
    let (mean, got) = moments(samples);
    let n = samples.len() as f64;
    // Mean within 5 standard errors of 0; variance within 6% (the sample variance's
    // relative standard error is about sqrt((kurtosis - 1) / n) <= 1.7% here).
    assert!(mean.abs() < 5.0 * (variance / n).sqrt(), "{what}: mean {mean} is not centred");
    assert!((got / variance - 1.0).abs() < 0.06, "{what}: variance {got}, declared {variance}");
}

#[test]
fn skellam_has_the_declared_variance_small_and_large() {
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    // Below and above the sampler's switch at a Poisson mean of 10, up to 2^40.
    for variance in [0.3, 2.0, 19.0, 21.0, 500.0, 1e6, (1u64 << 40) as f64] {
        let noise = Skellam::with_variance(variance).expect("test value");
        let samples: Vec<i64> = (0..SAMPLES).map(|_| noise.sample(&mut rng)).collect();
        assert_moments(&samples, variance, &format!("Skellam({variance})"));
    }
}

#[test]
fn shares_of_n_contributors_sum_to_the_declared_variance() {
    // Three contributors each add Skellam(V / 3): the sum must carry V.
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let declared = 900.0;
    let share = Skellam::with_variance(declared / 3.0).expect("test value");
    let sums: Vec<i64> = (0..SAMPLES).map(|_| (0..3).map(|_| share.sample(&mut rng)).sum()).collect();
    assert_moments(&sums, declared, "sum of three shares");
    // Only two of them (one dropped out): two thirds of the variance, not V.
    let two: Vec<i64> = (0..SAMPLES).map(|_| (0..2).map(|_| share.sample(&mut rng)).sum()).collect();
    assert_moments(&two, declared * 2.0 / 3.0, "sum of two shares");
}

#[test]
fn noise_added_modulo_2_64_decodes_as_signed() {
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let noise = Skellam::with_variance(100.0).expect("test value");
    let mut values = vec![0u64; 4096];
    noise.add_to(&mut values, &mut rng);
    let decoded: Vec<i64> = values.iter().map(|&v| v as i64).collect();
    assert!(decoded.iter().any(|&x| x < 0), "no negative noise in 4096 samples");
    assert!(values.iter().any(|&v| v > u64::MAX / 2), "negative noise must wrap below 2^64");
    assert!(decoded.iter().all(|&x| x.unsigned_abs() < skellam_tail_bound(100)));
    assert_moments(&decoded, 100.0, "wrapped noise");

    // Input plus noise from three contributors, each wrapping, sums back exactly.
    let inputs = [5u64, 0, 17];
    let mut total = 0u64;
    let mut noise_total = 0i64;
    for x in inputs {
        let e = noise.sample(&mut rng);
        noise_total += e;
        total = total.wrapping_add(x.wrapping_add(e as u64));
    }
    assert_eq!(total as i64, 22 + noise_total);
}

#[test]
fn parameters_outside_the_samplers_range_are_refused() {
    for variance in [0.0, -1.0, f64::NAN, f64::INFINITY, MAX_VARIANCE as f64 * 2.0] {
        assert!(
            matches!(Skellam::with_variance(variance), Err(CryptoError::NoiseParameter { .. })),
            "variance {variance} accepted"
        );
    }
    for (epsilon, sensitivity) in [(0.0, 1.0), (-1.0, 1.0), (1.0, 0.0), (f64::NAN, 1.0), (1e-9, 1.0)] {
        assert!(DiscreteLaplace::new(epsilon, sensitivity).is_err(), "ε {epsilon} Δ {sensitivity} accepted");
    }
}

#[test]
fn discrete_laplace_has_its_variance() {
    let mut rng = ChaCha20Rng::seed_from_u64(13);
    for epsilon in [0.1, 0.5, 1.0, 2.0] {
        let noise = DiscreteLaplace::new(epsilon, 1.0).expect("test value");
        let samples: Vec<i64> = (0..SAMPLES).map(|_| noise.sample(&mut rng)).collect();
        // Heavier tails than a Gaussian (kurtosis 6): a wider tolerance.
        let (mean, got) = moments(&samples);
        let declared = noise.variance();
        assert!(mean.abs() < 5.0 * (declared / SAMPLES as f64).sqrt(), "ε {epsilon}: mean {mean}");
        assert!((got / declared - 1.0).abs() < 0.08, "ε {epsilon}: variance {got}, expected {declared}");
        // P(0) = (1 − q) / (1 + q), q = e^-ε.
        let q = (-epsilon).exp();
        let zeros = samples.iter().filter(|&&x| x == 0).count() as f64 / SAMPLES as f64;
        assert!((zeros - (1.0 - q) / (1.0 + q)).abs() < 0.01, "ε {epsilon}: P(0) = {zeros}");
    }
}

#[test]
fn skellam_epsilon_follows_the_gaussian_bound_and_shrinks_with_noise() {
    // Large variance: the Skellam RDP bound tends to the Gaussian one,
    // ε ≈ Δ²/(2V) + Δ·sqrt(2·ln(1/δ)/V).
    let (variance, delta, sensitivity) = (1e6, 1e-6, 100.0);
    let gaussian = sensitivity * sensitivity / (2.0 * variance)
        + sensitivity * (2.0 * (1.0f64 / delta).ln() / variance).sqrt();
    let epsilon = skellam_epsilon(variance, sensitivity, sensitivity, delta);
    assert!((epsilon / gaussian - 1.0).abs() < 0.02, "ε {epsilon}, Gaussian {gaussian}");
    // More noise, smaller ε; smaller δ, larger ε.
    assert!(skellam_epsilon(4.0 * variance, 100.0, 100.0, delta) < epsilon);
    assert!(skellam_epsilon(variance, 100.0, 100.0, 1e-9) > epsilon);
}
